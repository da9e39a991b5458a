"""Secret redaction and input limits (pure)."""

from __future__ import annotations

from planner_service.domain.limits import check_depth, check_intent, find_nul, json_depth
from planner_service.domain.redaction import REDACTED, Redactor


def test_builtin_secret_patterns_are_redacted() -> None:
    r = Redactor()
    key = "pxk_0123456789ab_" + "A" * 43
    text = f"use {key} and sk-abcdefghijklmnopqrstuv; Authorization: Bearer abc.def.ghi123 ok"
    out = r.text(text)
    assert key not in out
    assert "sk-abcdefghijklmnopqrstuv" not in out
    assert "abc.def.ghi123" not in out
    assert out.endswith(" ok")
    assert out.count(REDACTED) == 3


def test_configured_patterns_and_secret_keys_in_json() -> None:
    r = Redactor([r"acct-\d{6}"])
    value = {
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "json"},
        "notes": ["account acct-123456 is fine"],
        "count": 3,
    }
    out = r.value(value)
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert out["notes"] == [f"account {REDACTED} is fine"]
    assert out["count"] == 3
    assert value["headers"]["Authorization"] == "Basic dXNlcjpwYXNz"  # input not mutated


def test_json_depth_is_iterative_and_exact() -> None:
    assert json_depth("x") == 0
    assert json_depth({}) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4
    deep: object = 0
    for _ in range(50_000):  # deeper than the Python stack would allow recursively
        deep = [deep]
    assert json_depth(deep) == 50_000


def test_limits_name_themselves() -> None:
    violation = check_intent("é" * 9000, 16_384)  # 18,000 bytes in UTF-8
    assert violation is not None
    assert violation.limit == "max_intent_bytes"
    assert check_intent("é" * 8000, 16_384) is None
    nested = {"a": {"b": {"c": 1}}}
    assert check_depth(nested, "context", 3) is None
    too_deep = check_depth(nested, "context", 2)
    assert too_deep is not None
    assert too_deep.limit == "max_json_depth"


def test_find_nul_points_at_the_value() -> None:
    assert find_nul({"a": ["ok", "bad\x00"]}) == "/a/1"
    assert find_nul({"k\x00": 1}) == "/k\x00"
    assert find_nul({"a": "fine"}) is None
