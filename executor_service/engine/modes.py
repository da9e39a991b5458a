"""Adapters of the run modes that call no tool: dry run (simulated) and replay (recorded).

A run's mode is fixed at creation. In a dry run each tool answers with an output made from
its ``output_schema`` (``domain.simulate``), so a plan can be previewed end to end with no
side effect; in a replay each step answers with the output the source run recorded. Either
way the output is verified exactly as a real one would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from shared_schemas import ToolSpec

from ..domain.simulate import SimulationError, simulated_output
from ..tools.base import InvocationContext, ToolError, ToolResult


class SimulatedTool:
    """Dry run: an output that conforms to the tool's ``output_schema``; nothing is called.

    The estimated cost (``ToolSpec.cost_usd``) is reported in ``usage``, never spent.
    """

    def __init__(self, spec: ToolSpec) -> None:
        self._spec = spec.model_copy(update={"idempotent": True})

    @property
    def spec(self) -> ToolSpec:
        """The real tool's spec, marked idempotent (a simulated call has no effect)."""
        return self._spec

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Simulate one call; deterministic per run and step.

        Raises:
            ToolError: ``simulation_unsupported`` when no conforming output can be made.
        """
        try:
            # A large schema takes a while the first time: keep the event loop free.
            output = await asyncio.to_thread(
                simulated_output, self._spec.output_schema, seed=f"{ctx.run_id}/{ctx.step_id}"
            )
        except SimulationError as exc:
            raise ToolError(str(exc), retryable=False, code="simulation_unsupported") from exc
        usage = {"simulated": True, "estimated_cost_usd": self._spec.cost_usd}
        return ToolResult(output, cost_usd=0.0, usage=usage)


class RecordedTool:
    """Replay: the output the source run recorded for the step; nothing is called."""

    def __init__(self, spec: ToolSpec, recorded: Mapping[str, Any]) -> None:
        self._spec = spec.model_copy(update={"idempotent": True})
        self._recorded = recorded

    @property
    def spec(self) -> ToolSpec:
        """The real tool's spec, marked idempotent (a replayed call has no effect)."""
        return self._spec

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Return the recorded output of ``ctx.step_id``.

        Raises:
            ToolError: ``no_recording`` when the source run recorded no output for the step.
        """
        if ctx.step_id not in self._recorded:
            raise ToolError(
                f"the source run recorded no output for step {ctx.step_id!r}",
                retryable=False,
                code="no_recording",
            )
        return ToolResult(self._recorded[ctx.step_id], usage={"replayed": True})
