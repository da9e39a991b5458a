"""Output verification: the tool's ``output_schema`` and the step's ``success_criteria``."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import referencing
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from shared_schemas import AssertionOp, OutputAssertion, SuccessCriteria
from shared_schemas.refs import PointerNotFoundError, RefSyntaxError, resolve_pointer

from .transitions import Failure

# Never retrieve a remote "$ref": tool schemas come from outside (OpenAPI documents, MCP
# servers), and a fetch would be an SSRF from the executor (RELIABILITY S7, S10).
_NO_REMOTE = referencing.Registry()


@functools.lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    validator: Validator = jsonschema.Draft202012Validator(schema, registry=_NO_REMOTE)
    return validator


_BY_ID: dict[int, tuple[dict[str, Any], Validator]] = {}


def _validator_for(schema: dict[str, Any]) -> Validator:
    """One compiled validator per schema.

    Catalog schemas live as long as the process, so they are found by identity first (the
    held reference keeps the id valid).
    """
    found = _BY_ID.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    validator = _validator(json.dumps(schema, sort_keys=True))
    if len(_BY_ID) < 4096:
        _BY_ID[id(schema)] = (schema, validator)
    return validator


def _schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    if not schema:
        return []
    validator = _validator_for(schema)
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path)))
    except Unresolvable as exc:
        return [f"the output schema has a $ref that cannot be resolved here: {exc}"]
    return [
        f"{'/' + '/'.join(str(p) for p in err.absolute_path)}: {err.message}" for err in errors[:5]
    ]


def _holds(assertion: OutputAssertion, output: Any) -> bool:
    try:
        actual = resolve_pointer(output, assertion.path)
    except (PointerNotFoundError, RefSyntaxError):
        return False
    expected = assertion.value
    op = assertion.op
    try:
        if op is AssertionOp.EXISTS:
            return True
        if op is AssertionOp.EQ:
            return bool(actual == expected)
        if op is AssertionOp.NE:
            return bool(actual != expected)
        if op is AssertionOp.CONTAINS:
            return expected in actual
        if op is AssertionOp.LT:
            return bool(actual < expected)
        if op is AssertionOp.LE:
            return bool(actual <= expected)
        if op is AssertionOp.GT:
            return bool(actual > expected)
        return bool(actual >= expected)
    except TypeError:
        return False


def verify_output(
    output: Any, output_schema: dict[str, Any], criteria: SuccessCriteria | None
) -> Failure | None:
    """None when ``output`` satisfies the tool's schema and the step's criteria.

    Returns a non-retryable ``output_invalid`` failure naming the first problems otherwise:
    repeating the same call is not expected to produce a different shape.
    """
    problems = _schema_errors(output_schema, output)
    if criteria is not None:
        if criteria.output_schema:
            problems += _schema_errors(criteria.output_schema, output)
        problems += [
            f"assertion {a.path or '/'} {a.op.value} {a.value!r} does not hold"
            for a in criteria.assertions
            if not _holds(a, output)
        ]
    if not problems:
        return None
    return Failure("output_invalid", "; ".join(problems[:5]), retryable=False)
