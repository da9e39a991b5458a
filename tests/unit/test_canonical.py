"""RFC 8785 canonical JSON, content hashes and signatures."""

from __future__ import annotations

import hashlib
import struct
import uuid

import pytest

from shared_schemas import (
    CanonicalJSONError,
    Plan,
    PlannerInfo,
    Step,
    canonical_json,
    content_hash,
    seal,
    verify,
)


def _ieee(hex_bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(hex_bits))[0]
    return value


# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical serialisation.
@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"),
        ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"),
        ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"),
    ],
)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    assert canonical_json(_ieee(bits)).decode() == expected


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_appendix_b_nan_and_infinity_are_refused(bits: str) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(_ieee(bits))


def test_rfc8785_section_3_2_2_example() -> None:
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(value).decode("utf-8") == expected


def test_rfc8785_section_3_2_3_sorts_keys_by_utf16_code_units() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys_in_output = list(__import__("json").loads(canonical_json(value)))
    # U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB33 in UTF-16.
    assert keys_in_output == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def _plan(**args: object) -> Plan:
    return Plan(
        plan_id=uuid.UUID("6f1c1a52-6a1e-4f6e-9d0b-3f2a8c9e0d11"),
        version=1,
        intent="say hello",
        tenant="acme",
        created_by="alice",
        steps=[Step(id="hello", tool="transform", args=dict(args))],
        catalog_version="sha256:" + "0" * 64,
        policy_version="sha256:" + "1" * 64,
        planner=PlannerInfo(backend="draft"),
    )


def test_integer_outside_i_json_is_refused_not_rounded() -> None:
    plan = _plan(n=2**53)
    with pytest.raises(CanonicalJSONError, match="safe integer"):
        content_hash(plan)
    # the largest I-JSON integer is fine and kept exactly
    assert b"9007199254740991" in canonical_json(_plan(n=2**53 - 1).model_dump(mode="json"))


def test_content_hash_is_sha256_of_canonical_body_without_hash_and_signature() -> None:
    plan = _plan(expression="a.b")
    body = plan.model_dump(mode="json", exclude={"content_hash", "signature"})
    expected = "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()
    assert content_hash(plan) == expected
    sealed = seal(plan, b"k" * 32)
    assert sealed.content_hash == expected
    assert content_hash(sealed) == expected  # sealing does not change the body


def test_signature_verifies_and_detects_tampering() -> None:
    key = b"s" * 32
    sealed = seal(_plan(expression="a"), key)
    assert verify(sealed, key)
    assert not verify(sealed, b"t" * 32)
    tampered = sealed.model_copy(update={"intent": "drop the database"})
    assert not verify(tampered, key)
    unsigned = sealed.model_copy(update={"signature": None})
    assert not verify(unsigned, key)
