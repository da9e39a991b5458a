"""Strict parsing of generated plan text into the contract (DESIGN §4, step 3).

No best-effort guessing: malformed JSON, duplicate keys, ``NaN``/``Infinity`` and anything the
``PlanDraft`` model refuses are reported as ``schema`` issues, never repaired silently.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError

from shared_schemas import IssueCode, PlanDraft, ValidationIssue


class DraftParseError(ValueError):
    """The text is not a valid ``PlanDraft``; ``issues`` says why, each with a JSON pointer."""

    def __init__(self, issues: list[ValidationIssue]) -> None:
        super().__init__("; ".join(f"{i.path or '/'}: {i.message}" for i in issues))
        self.issues = issues


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer I-JSON (RFC 7493 §2.2) allows; larger ones lose precision in IEEE doubles."""


def _i_json_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise ValueError(f"integer {text} is outside the I-JSON range ±(2**53 - 1) (RFC 7493)")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} overflows an IEEE 754 double (RFC 7493 §2.2)")
    return value


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON per RFC 8259 and I-JSON (RFC 7493).

    Refuses duplicate keys, ``NaN``/``Infinity``, integers beyond ±(2**53 - 1) and numbers
    that overflow a double, instead of guessing or rounding.

    Raises:
        ValueError: naming the first problem (``json.JSONDecodeError`` gives its position).
    """
    return json.loads(
        text,
        object_pairs_hook=_no_duplicates,
        parse_constant=_no_constant,
        parse_int=_i_json_int,
        parse_float=_finite_float,
    )


def pointer(loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into an RFC 6901 JSON Pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def issues_from_validation_error(exc: ValidationError, prefix: str = "") -> list[ValidationIssue]:
    """Turn a pydantic ``ValidationError`` into ``schema`` issues with JSON pointers."""
    return [
        ValidationIssue(
            code=IssueCode.SCHEMA, message=err["msg"], path=prefix + pointer(err["loc"])
        )
        for err in exc.errors(include_url=False)
    ]


def parse_draft_value(value: Any) -> PlanDraft:
    """Validate an already-decoded JSON value as a ``PlanDraft``.

    Raises:
        DraftParseError: with one ``schema`` issue per problem.

    """
    try:
        return PlanDraft.model_validate(value, strict=False)
    except ValidationError as exc:
        raise DraftParseError(issues_from_validation_error(exc)) from exc


def parse_draft(text: str | bytes) -> PlanDraft:
    """Parse JSON text strictly into a ``PlanDraft``.

    Raises:
        DraftParseError: on malformed JSON (one issue with the position) or schema violations.

    """
    try:
        value = loads_strict(text)
    except ValueError as exc:
        issue = ValidationIssue(code=IssueCode.SCHEMA, message=f"malformed JSON: {exc}", path="")
        raise DraftParseError([issue]) from exc
    return parse_draft_value(value)
