"""Static plan validation: one test per issue code, plus refs and JSON Pointer helpers."""

from __future__ import annotations

from typing import Any

import pytest

from planner_service.domain.validation import ValidationLimits, _compile, validate_plan
from shared_schemas import IssueCode, PlanDraft, SideEffect, ToolSpec, ValidationReport
from shared_schemas.refs import (
    PointerNotFoundError,
    Ref,
    RefSyntaxError,
    iter_refs,
    join_pointer,
    parse_ref,
    resolve_pointer,
    split_pointer,
)

TOOLS = {
    t.name: t
    for t in [
        ToolSpec(
            name="http.get",
            input_schema={
                "type": "object",
                "properties": {"url": {"type": "string"}, "headers": {"type": "object"}},
                "required": ["url"],
                "additionalProperties": False,
            },
        ),
        ToolSpec(
            name="record.write",
            side_effect=SideEffect.WRITE,
            cost_usd=0.25,
            input_schema={
                "type": "object",
                "properties": {"id": {"type": "integer"}, "body": {}},
                "required": ["id"],
            },
            compensation="record.delete",
        ),
        ToolSpec(
            name="record.delete",
            side_effect=SideEffect.DESTRUCTIVE,
            cost_usd=1.5,
            input_schema={
                "type": "object",
                "properties": {"id": {"type": "integer"}},
                "required": ["id"],
            },
        ),
    ]
}
LIMITS = ValidationLimits()


def get(
    step_id: str, *deps: str, url: Any = "https://example.org/", **extra: Any
) -> dict[str, Any]:
    return {
        "id": step_id,
        "tool": "http.get",
        "args": {"url": url},
        "depends_on": list(deps),
        **extra,
    }


def draft(*steps: dict[str, Any]) -> PlanDraft:
    return PlanDraft.model_validate({"steps": list(steps)})


def check(
    *steps: dict[str, Any], tools: dict[str, ToolSpec] = TOOLS, **kw: Any
) -> ValidationReport:
    return validate_plan(draft(*steps), tools, kw.pop("limits", LIMITS), **kw)


def found(report: ValidationReport) -> list[tuple[str | None, str, str]]:
    return [(i.step_id, i.code.value, i.path) for i in report.issues]


def only(report: ValidationReport, code: IssueCode) -> list[Any]:
    return [i for i in report.issues if i.code is code]


def test_a_valid_plan_has_no_issues() -> None:
    write = {
        "id": "save",
        "tool": "record.write",
        "args": {"id": 7, "body": {"page": {"$ref": "fetch.output/body"}}},
        "depends_on": ["fetch"],
        "compensation": {"tool": "record.delete", "args": {"id": {"$ref": "save.output/id"}}},
    }
    report = check(get("fetch"), write, budget_usd=0.25)
    assert report == ValidationReport(valid=True, issues=[])


def test_duplicate_step_id_points_at_the_second_step() -> None:
    report = check(get("a"), get("a"))
    assert found(report) == [("a", "duplicate_step_id", "/steps/1/id")]
    assert "/steps/0" in report.issues[0].message


def test_unknown_tool_with_a_suggestion() -> None:
    report = check({"id": "a", "tool": "http.gett", "args": {}})
    assert found(report) == [("a", "unknown_tool", "/steps/0/tool")]
    assert "did you mean 'http.get'" in report.issues[0].message


def test_unknown_compensation_tool() -> None:
    step = get("a", compensation={"tool": "undo.everything", "args": {}})
    assert found(check(step)) == [("a", "unknown_tool", "/steps/0/compensation/tool")]


def test_missing_dependency_points_at_the_entry() -> None:
    report = check(get("a"), get("b", "a", "ghost"))
    assert found(report) == [("b", "missing_dependency", "/steps/1/depends_on/1")]
    assert "'ghost'" in report.issues[0].message


def test_cycle_is_named_once_in_depends_on_order() -> None:
    report = check(get("a", "c"), get("b", "a"), get("c", "b"), get("d", "c"))
    assert found(report) == [("a", "cycle", "/steps/0/depends_on/0")]
    assert report.issues[0].message.startswith("cycle: a -> c -> b -> a")


def test_self_dependency_is_a_cycle() -> None:
    assert found(check(get("a", "a"))) == [("a", "cycle", "/steps/0/depends_on/0")]


def test_disjoint_cycles_are_each_reported() -> None:
    report = check(get("a", "b"), get("b", "a"), get("c"), get("d", "e"), get("e", "d", "c"))
    messages = [i.message.split(" (")[0] for i in only(report, IssueCode.CYCLE)]
    assert messages == ["cycle: a -> b -> a", "cycle: d -> e -> d"]


def test_overlapping_cycles_are_one_issue_and_many_disjoint_ones_are_all_listed() -> None:
    report = check(get("a", "b", "c"), get("b", "a"), get("c", "a"))
    assert [i.step_id for i in only(report, IssueCode.CYCLE)] == ["a"]
    steps = [get(f"s{k}", f"s{k}") for k in range(40)]
    cycles = only(check(*steps, limits=ValidationLimits(max_steps=100)), IssueCode.CYCLE)
    assert [i.message.split(" (")[0] for i in cycles] == [f"cycle: s{k} -> s{k}" for k in range(40)]


def test_ref_to_transitive_ancestor_is_accepted() -> None:
    report = check(get("a"), get("b", "a"), get("c", "b", url={"$ref": "a.output/url"}))
    assert report.valid


@pytest.mark.parametrize(
    ("target", "why"),
    [("b", "not an ancestor"), ("c", "own output"), ("zz", "no step 'zz'")],
)
def test_ref_not_ancestor(target: str, why: str) -> None:
    args = {"url": "u", "headers": {"x": [1, {"$ref": f"{target}.output"}]}}
    report = check(get("a"), get("b", "a"), get("c", "a") | {"args": args})
    assert found(report) == [("c", "ref_not_ancestor", "/steps/2/args/headers/x/1")]
    assert why in report.issues[0].message


def test_ref_check_works_in_a_cyclic_plan() -> None:
    report = check(
        get("a", "b"),
        get("b", "a"),
        get("c", url={"$ref": "a.output"}),
        get("d", "a", url={"$ref": "b.output"}),
    )
    assert [(i.step_id, i.code.value) for i in report.issues] == [
        ("a", "cycle"),
        ("c", "ref_not_ancestor"),
    ]


def test_compensation_may_use_its_own_step_but_not_a_stranger() -> None:
    comp = {"tool": "record.delete", "args": {"id": {"$ref": "w.output/id"}}}
    ok = {"id": "w", "tool": "record.write", "args": {"id": 1}, "compensation": comp}
    assert check(ok).valid
    bad = ok | {"compensation": {"tool": "record.delete", "args": {"id": {"$ref": "x.output/id"}}}}
    report = check(get("x"), bad)
    assert found(report) == [("w", "ref_not_ancestor", "/steps/1/compensation/args/id")]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"$ref": "a.output.url"}, "'a.output/url'"),
        ({"$ref": "a.output/~2"}, "RFC 6901"),
        ({"$ref": "a.outcome/x"}, "'.output'"),
        ({"$ref": "A.output/x"}, "step id"),
        ({"$ref": 3}, "must be a string"),
        ({"$ref": "a.output/url", "default": "x"}, "no other keys"),
    ],
)
def test_ref_bad_pointer(value: Any, says: str) -> None:
    report = check(get("a"), get("b", "a", url=value))
    assert found(report) == [("b", "ref_bad_pointer", "/steps/1/args/url")]
    assert says in report.issues[0].message


def test_args_schema_errors_carry_the_json_path_in_order() -> None:
    step = get("a", url=5) | {"args": {"url": 5, "headers": [], "extra": True}}
    report = check(step)
    assert found(report) == [
        ("a", "args_schema", "/steps/0/args"),
        ("a", "args_schema", "/steps/0/args/headers"),
        ("a", "args_schema", "/steps/0/args/url"),
    ]
    assert "'extra' was unexpected" in report.issues[0].message
    assert "schema /properties/url/type" in report.issues[2].message


def test_an_any_of_error_names_the_closest_branch() -> None:
    schema = {"properties": {"n": {"anyOf": [{"type": "integer"}, {"items": {"type": "string"}}]}}}
    tools = {"t": ToolSpec(name="t", input_schema=schema)}
    report = check({"id": "a", "tool": "t", "args": {"n": [1]}}, tools=tools)
    assert found(report) == [("a", "args_schema", "/steps/0/args/n")]
    assert "closest: 1 is not of type 'string' (at /steps/0/args/n/0)" in report.issues[0].message


def test_missing_required_arg() -> None:
    report = check({"id": "a", "tool": "http.get", "args": {}})
    assert found(report) == [("a", "args_schema", "/steps/0/args")]
    assert "'url' is a required property" in report.issues[0].message


def test_a_ref_stands_for_any_value_but_the_object_rules_still_apply() -> None:
    ref = {"$ref": "a.output/n"}
    ok = {"id": "b", "tool": "record.write", "args": {"id": ref}, "depends_on": ["a"]}
    assert check(get("a"), ok).valid
    extra = get("b", "a", url=ref) | {"args": {"url": ref, "nope": ref}}
    assert found(check(get("a"), extra)) == [("b", "args_schema", "/steps/1/args")]


def test_whole_args_may_be_a_ref() -> None:
    step = {"id": "b", "tool": "http.get", "args": {"$ref": "a.output"}, "depends_on": ["a"]}
    assert check(get("a"), step).valid


def test_ref_against_enum_const_and_not_is_accepted() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mode": {"enum": ["a", "b"]},
            "k": {"const": 1},
            "n": {"not": {}},
            "pick": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    tools = {"t": ToolSpec(name="t", input_schema=schema), **TOOLS}
    args = {name: {"$ref": "a.output"} for name in ("mode", "k", "n", "pick")}
    assert check(
        get("a"), {"id": "b", "tool": "t", "args": args, "depends_on": ["a"]}, tools=tools
    ).valid
    forbidden = ToolSpec(name="t", input_schema={"properties": {"mode": False}})
    report = check(
        get("a"),
        {"id": "b", "tool": "t", "args": args, "depends_on": ["a"]},
        tools={"t": forbidden, **TOOLS},
    )
    # jsonschema 4.26 leaves the path off "False schema" errors, so it points at the args.
    assert found(report) == [("b", "args_schema", "/steps/1/args")]
    assert "False schema does not allow {'$ref': 'a.output'}" in report.issues[0].message


def test_compensation_args_are_checked_against_their_tool() -> None:
    comp = {"tool": "record.delete", "args": {"id": "seven"}}
    step = {"id": "w", "tool": "record.write", "args": {"id": 1}, "compensation": comp}
    assert found(check(step)) == [("w", "args_schema", "/steps/0/compensation/args/id")]


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "nope"}, "invalid input_schema"),
        ({"properties": {"x": {"$ref": "https://example.org/s.json"}}}, "cannot be applied"),
        ({"minLength": {1}}, "not JSON"),
    ],
)
def test_a_bad_input_schema_is_an_issue_not_an_exception(schema: Any, says: str) -> None:
    tools = {"t": ToolSpec(name="t", input_schema=schema)}
    report = check({"id": "a", "tool": "t", "args": {"x": 1}}, tools=tools)
    assert found(report) == [("a", "args_schema", "/steps/0/args")]
    assert says in report.issues[0].message


def test_compiled_validators_are_reused() -> None:
    plan = draft(get("a"), get("b"), get("c"))
    validate_plan(plan, TOOLS, LIMITS)
    before = _compile.cache_info()
    validate_plan(plan, TOOLS, LIMITS)
    after = _compile.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1


def test_too_many_steps() -> None:
    steps = [get(f"s{k}") for k in range(4)]
    assert check(*steps, limits=ValidationLimits(max_steps=4)).valid
    report = check(*steps, limits=ValidationLimits(max_steps=3))
    assert found(report) == [(None, "too_many_steps", "/steps")]
    assert "4 steps" in report.issues[0].message and "3" in report.issues[0].message


def test_too_deep_names_the_chain() -> None:
    steps = [get("a"), get("b", "a"), get("c", "b"), get("x")]
    assert check(*steps, limits=ValidationLimits(max_depth=3)).valid
    report = check(*steps, limits=ValidationLimits(max_depth=2))
    assert found(report) == [("c", "too_deep", "/steps/2")]
    assert "3 steps" in report.issues[0].message and "from 'a' to 'c'" in report.issues[0].message


def test_depth_is_not_computed_for_a_cyclic_plan() -> None:
    report = check(
        get("a", "b"), get("b", "a"), get("c", "b"), limits=ValidationLimits(max_depth=1)
    )
    assert [i.code for i in report.issues] == [IssueCode.CYCLE]


def test_over_budget_names_both_figures() -> None:
    write = {"id": "w", "tool": "record.write", "args": {"id": 1}}
    delete = {"id": "d", "tool": "record.delete", "args": {"id": 1}}
    assert check(write, delete, budget_usd=1.75).valid
    assert check(write, delete).valid
    report = check(write, delete, budget_usd=1.5)
    assert found(report) == [(None, "over_budget", "/steps")]
    assert "1.75 USD" in report.issues[0].message and "1.5 USD" in report.issues[0].message


def test_unsafe_in_safe_mode() -> None:
    comp = {"tool": "record.delete", "args": {"id": 1}}
    write = {"id": "w", "tool": "record.write", "args": {"id": 1}, "compensation": comp}
    assert check(get("r"), write).valid
    report = check(get("r"), write, safe_mode=True)
    assert found(report) == [
        ("w", "unsafe_in_safe_mode", "/steps/1/tool"),
        ("w", "unsafe_in_safe_mode", "/steps/1/compensation/tool"),
    ]
    assert "write" in report.issues[0].message and "destructive" in report.issues[1].message


def test_every_issue_is_reported_at_once_in_plan_order() -> None:
    steps = [
        get("a", url=1),
        get("a", "ghost"),
        {"id": "w", "tool": "record.write", "args": {"id": {"$ref": "zz.output"}}},
        {"id": "q", "tool": "nope", "args": {}},
    ]
    report = check(*steps, limits=ValidationLimits(max_steps=3), safe_mode=True, budget_usd=0.1)
    assert [i.code.value for i in report.issues] == [
        "too_many_steps",
        "over_budget",
        "args_schema",
        "duplicate_step_id",
        "missing_dependency",
        "ref_not_ancestor",
        "unsafe_in_safe_mode",
        "unknown_tool",
    ]
    assert report.valid is False


# --- refs: parsing, walking, resolving ---------------------------------------------------


def test_parse_ref() -> None:
    assert parse_ref({"$ref": "fetch.output/items/0/a~1b"}) == Ref("fetch", "/items/0/a~1b")
    assert parse_ref({"$ref": "fetch.output"}) == Ref("fetch", "")
    assert str(Ref("fetch", "/x")) == "fetch.output/x"
    assert parse_ref({"ref": "fetch.output"}) is None
    assert parse_ref("fetch.output/x") is None
    with pytest.raises(RefSyntaxError):
        parse_ref({"$ref": "fetch.output/~"})


def test_iter_refs_walks_nested_values_in_document_order() -> None:
    args = {
        "a": [{"$ref": "s.output/0"}, {"deep": {"$ref": "t.output"}}],
        "b/c": {"$ref": "u.output.x"},
        "d": {"$ref": {"$ref": "v.output"}},
    }
    walked = [(p, r if isinstance(r, Ref) else type(r)) for p, r in iter_refs(args)]
    assert walked == [
        ("/a/0", Ref("s", "/0")),
        ("/a/1/deep", Ref("t", "")),
        ("/b~1c", RefSyntaxError),
        ("/d", RefSyntaxError),
    ]
    assert [p for p, _ in iter_refs({"$ref": "s.output"}, "/args")] == ["/args"]


RFC_6901_DOC = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("", RFC_6901_DOC),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_resolve_pointer_rfc_6901_examples(pointer: str, value: Any) -> None:
    assert resolve_pointer(RFC_6901_DOC, pointer) == value


@pytest.mark.parametrize(
    ("pointer", "at"),
    [
        ("/nope", "/nope"),
        ("/foo/2", "/foo/2"),
        ("/foo/-", "/foo/-"),
        ("/foo/01", "/foo/01"),
        ("/foo/0/x", "/foo/0/x"),
    ],
)
def test_resolve_pointer_missing_path(pointer: str, at: str) -> None:
    with pytest.raises(LookupError) as info:
        resolve_pointer(RFC_6901_DOC, pointer)
    assert isinstance(info.value, PointerNotFoundError)
    assert info.value.at == at and info.value.pointer == pointer


def test_malformed_pointers_are_syntax_errors() -> None:
    for bad in ("foo", "/a~", "/a~2"):
        with pytest.raises(RefSyntaxError):
            split_pointer(bad)
    assert split_pointer("/~01") == ["~1"]
    assert join_pointer("/steps", 2, "a/b~") == "/steps/2/a~1b~0"
