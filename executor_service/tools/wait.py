"""The ``wait`` built-in: a durable timer (DESIGN §3, §6).

The deadline is ``ctx.first_started_at + seconds``: ``first_started_at`` is when the step's
first attempt started, on the database clock, so a step resumed after a crash or retried only
waits for what is left. Sleeping is ``asyncio.sleep``, so the engine's timeout and cancel
(asyncio cancellation) stop it at once.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from shared_schemas import ToolSpec

from .base import InvocationContext, ToolError, ToolResult

MAX_WAIT_S = 3600.0
"""Longest wait one step may ask for, in seconds (the spec's ``maximum``)."""

WAIT_SPEC = ToolSpec(
    name="wait",
    description="Waits for the given number of seconds.",
    input_schema={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S}},
        "required": ["seconds"],
    },
    idempotent=True,
    default_timeout_s=3600.0,
)
"""Catalog entry of ``wait``: args ``{seconds: number in [0, 3600]}``."""


def wait_deadline(seconds: float, first_started_at: datetime | None, now: datetime) -> datetime:
    """When a wait of ``seconds`` ends: ``first_started_at + seconds``, or ``now + seconds``.

    A naive ``first_started_at`` is read as UTC (the database clock is UTC).
    """
    start = now if first_started_at is None else first_started_at
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return start + timedelta(seconds=seconds)


class WaitTool:
    """Sleeps until the step's deadline.

    Output: ``{"waited_s": float, "until": str}``: the seconds this attempt slept (less than
    ``seconds`` when resumed, 0 when the deadline had passed) and the deadline, ISO 8601 UTC.
    """

    @property
    def spec(self) -> ToolSpec:
        """The ``wait`` catalog entry, ``WAIT_SPEC``."""
        return WAIT_SPEC

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Wait until ``ctx.first_started_at + args["seconds"]``.

        Raises:
            ToolError: ``bad_args`` (not retryable) when ``seconds`` is not a finite number in
                [0, 3600].
        """
        seconds = args.get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0 <= seconds <= MAX_WAIT_S
        ):
            raise ToolError(
                f"'seconds' must be a number in [0, {MAX_WAIT_S:g}], got {seconds!r}",
                retryable=False,
                code="bad_args",
            )
        now = datetime.now(UTC)
        until = wait_deadline(float(seconds), ctx.first_started_at, now)
        # Clamped to ``seconds``: a database clock ahead of ours must not lengthen the wait.
        remaining = min(float(seconds), max(0.0, (until - now).total_seconds()))
        loop = asyncio.get_running_loop()
        started = loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        waited = loop.time() - started
        return ToolResult(output={"waited_s": round(waited, 3), "until": until.isoformat()})
