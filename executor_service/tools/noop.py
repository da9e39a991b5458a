"""The ``noop`` built-in: returns at once, to measure orchestration overhead (issue 5, bench).

Not in the demo catalog; registered where benchmarks need it.
"""

from __future__ import annotations

from typing import Any

from shared_schemas import ToolSpec

from .base import InvocationContext, ToolResult

NOOP_SPEC = ToolSpec(
    name="noop",
    description="Does nothing and echoes 'value'; used to measure orchestration overhead.",
    input_schema={"type": "object", "properties": {"value": {}}},
    output_schema={
        "type": "object",
        "properties": {"ok": {"const": True}, "echo": {}},
        "required": ["ok", "echo"],
    },
    idempotent=True,
    default_timeout_s=5.0,
)
"""Catalog entry of ``noop``: args ``{value?: any}``, output ``{ok: true, echo: value|null}``."""


class NoopTool:
    """Returns ``{"ok": true, "echo": args.get("value")}`` without I/O."""

    @property
    def spec(self) -> ToolSpec:
        """The ``noop`` catalog entry, ``NOOP_SPEC``."""
        return NOOP_SPEC

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Echo ``args["value"]`` (``None`` when absent); never raises."""
        return ToolResult(output={"ok": True, "echo": args.get("value")})
