"""The ``transform`` built-in: a JMESPath expression evaluated over data (DESIGN §3, §10).

Pure and read-only: the same ``data`` and ``expression`` always give the same result, so a
retry or a resumed run is harmless. Expressions are compiled once per process and cached.
"""

from __future__ import annotations

import functools
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from shared_schemas import ToolSpec

from .base import InvocationContext, ToolError, ToolResult

TRANSFORM_SPEC = ToolSpec(
    name="transform",
    description="Evaluates a JMESPath expression against data and returns the result.",
    input_schema={
        "type": "object",
        "properties": {"data": {}, "expression": {"type": "string", "minLength": 1}},
        "required": ["data", "expression"],
    },
    idempotent=True,
    default_timeout_s=5.0,
)
"""Catalog entry of ``transform``: args ``{data: any JSON, expression: str}``, any output."""

_CACHED_EXPRESSIONS = 1024


@functools.lru_cache(maxsize=_CACHED_EXPRESSIONS)
def compile_expression(expression: str) -> ParsedResult:
    """Compile a JMESPath ``expression`` (cached: up to 1024 distinct expressions).

    Raises:
        ToolError: ``bad_expression``, not retryable, when the expression does not parse
            (JMESPath specification, jmespath.org/specification.html).
    """
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ToolError(
            f"invalid JMESPath expression {expression!r}: {exc}",
            retryable=False,
            code="bad_expression",
        ) from exc


class TransformTool:
    """Evaluates ``args["expression"]`` (JMESPath) over ``args["data"]``.

    The output is the JMESPath result itself, any JSON value (``null`` when nothing matches).
    """

    @property
    def spec(self) -> ToolSpec:
        """The ``transform`` catalog entry, ``TRANSFORM_SPEC``."""
        return TRANSFORM_SPEC

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Evaluate the expression; the context is not used (the call is pure).

        Raises:
            ToolError: ``bad_expression`` (not retryable) when ``expression`` is not a
                non-empty string or does not parse, or when evaluation fails, e.g. a function
                given an argument of the wrong type (``abs('a')``).
        """
        expression = args.get("expression")
        if not isinstance(expression, str) or not expression:
            raise ToolError(
                "'expression' must be a non-empty string", retryable=False, code="bad_expression"
            )
        compiled = compile_expression(expression)
        try:
            result = compiled.search(args.get("data"))
        except JMESPathError as exc:
            raise ToolError(
                f"JMESPath expression {expression!r} failed on the data: {exc}",
                retryable=False,
                code="bad_expression",
            ) from exc
        return ToolResult(output=result)
