"""Compensation (the saga pattern, Garcia-Molina & Salem, SIGMOD 1987) of a failed run.

When a run fails, each step that succeeded and declares a ``compensation`` is undone, one at
a time, in the reverse order of completion. Each compensation call is durable: its
``started`` attempt row (kind ``compensation``) is committed before the call, so after a
crash an idempotent compensation is re-run with the same idempotency key and a
non-idempotent one goes to ``needs_attention`` instead of running twice. A step ends
``compensated``; a compensation that fails for good leaves the step ``succeeded`` (its effect
stands) and is reported on the run.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared_schemas import Step

from ..domain.arguments import RefResolutionError, resolve_args
from ..domain.retry import retry_delay_s
from ..domain.states import StepStatus
from ..domain.transitions import Failed, Failure, Succeeded
from ..store.runs import AttemptWrite, StepRow
from ..tools.base import InvocationContext, ToolAdapter
from .attempt import run_attempt
from .faults import crash_if
from .modes import SimulatedTool

if TYPE_CHECKING:
    from .driver import RunDriver

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Saga:
    """Runs the compensations of one failed run through its driver (same lease, batches)."""

    def __init__(self, driver: RunDriver) -> None:
        self._d = driver

    def _todo(self) -> list[StepRow]:
        d = self._d
        rows = [
            row
            for row in d.rows.values()
            if row.status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATING)
            and d.steps[row.step_id].compensation is not None
        ]
        order = {s.id: i for i, s in enumerate(d.plan.steps)}
        # A compensation in progress first (it was the latest), then newest completion first.
        rows.sort(
            key=lambda r: (
                r.status != StepStatus.COMPENSATING,
                -(r.finished_at or _EPOCH).timestamp(),
                -order[r.step_id],
            )
        )
        return rows

    async def compensate(self) -> list[str]:
        """Compensate every due step; the ids whose compensation failed for good.

        While a step's outcome is unknown (``needs_attention``) the saga waits: undoing the
        steps before it first would break the reverse order once an operator decides.
        """
        if any(row.status == StepStatus.NEEDS_ATTENTION for row in self._d.rows.values()):
            return []
        todo = self._todo()
        if not todo:
            return []
        done = await self._d.store.compensation_attempts(self._d.run_id)
        failed: list[str] = []
        for row in todo:
            if not await self._one(row, done.get(row.step_id, 0)):
                failed.append(row.step_id)
        return failed

    def _tool(self, name: str) -> ToolAdapter | None:
        d = self._d
        real = d.real_tool(name)
        if real is None or d.mode == "normal":
            return real
        return SimulatedTool(real.spec)  # a replay or a dry run undoes nothing real

    def _give_up(self, row: StepRow, failure: Failure, attempt: int | None) -> bool:
        self._d.move(
            row.step_id,
            StepStatus.SUCCEEDED,
            "compensation.failed",
            attempt,
            {"error": failure.as_json()},
        )
        return False

    async def _one(self, row: StepRow, attempts_done: int) -> bool:
        d = self._d
        step = d.steps[row.step_id]
        compensation = step.compensation
        assert compensation is not None
        if row.status == StepStatus.SUCCEEDED:
            d.move(
                step.id,
                StepStatus.COMPENSATING,
                "compensation.started",
                None,
                {"tool": compensation.tool},
            )
        tool = self._tool(compensation.tool)
        if tool is None:
            failure = Failure(
                "tool_unavailable", f"tool {compensation.tool!r} is not in the catalog", False
            )
            return self._give_up(row, failure, None)
        try:
            args = resolve_args(compensation.args, d.outputs)
        except RefResolutionError as exc:
            return self._give_up(row, exc.failure, None)
        key = d.key(f"{step.id}#compensation", args)
        call = Step(
            id=step.id,
            tool=compensation.tool,
            args=compensation.args,
            timeout_s=step.timeout_s,
            retry=step.retry,
        )
        attempt = attempts_done
        while True:
            attempt += 1
            started = _now()
            d.batch.attempts.append(
                AttemptWrite(step.id, attempt, key, "started", started, kind="compensation")
            )
            await d.flush()
            crash_if(d.config.fault, "before_compensation", step.id)
            ctx = InvocationContext(
                run_id=d.run_id,
                step_id=step.id,
                attempt=attempt,
                idempotency_key=key,
                timeout_s=step.timeout_s or tool.spec.default_timeout_s,
                tenant=d.plan.tenant,
                traceparent=d.plan.traceparent,
            )
            result = await run_attempt(
                call, tool, args, ctx, max_output_bytes=d.config.max_output_bytes
            )
            crash_if(d.config.fault, "after_compensation", step.id)
            outcome = result.outcome
            error = outcome.failure.as_json() if isinstance(outcome, Failed) else None
            d.batch.attempts.append(
                AttemptWrite(
                    step.id,
                    attempt,
                    key,
                    "failed" if error else "succeeded",
                    started,
                    _now(),
                    round(result.duration_s, 6),
                    error,
                    kind="compensation",
                )
            )
            payload: dict[str, Any] = {"duration_s": round(result.duration_s, 6)}
            if isinstance(outcome, Succeeded):
                row.finished_at = _now()
                d.move(step.id, StepStatus.COMPENSATED, "compensation.succeeded", attempt, payload)
                await d.flush()
                return True
            failure = outcome.failure
            delay = (
                retry_delay_s(step.retry, attempt, failure.retry_after_s, d.rand)
                if failure.retryable
                else None
            )
            if delay is None:
                self._give_up(row, failure, attempt)
                await d.flush()
                return False
            payload |= {"error": failure.as_json(), "delay_s": delay}
            d.move(
                step.id, StepStatus.COMPENSATING, "compensation.retry_scheduled", attempt, payload
            )
            await d.flush()
            await asyncio.sleep(delay)
