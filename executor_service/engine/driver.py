"""Drives one leased run: starts ready steps, commits their outcomes, ends or parks the run.

The driver is the only writer of its run's step states while it holds the lease. Outcomes
of steps that finish together are written in one fenced statement (group commit); a
``started`` row is committed before the call only for tools that are not idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from planexec.telemetry import APPROVALS, METRICS, TRACER, context_from_traceparent, trace_id_of
from shared_schemas import Step

from ..domain.arguments import RefResolutionError, idempotency_key, resolve_args
from ..domain.states import TERMINAL_STEP, RunStatus, StepStatus
from ..domain.transitions import (
    ApprovalDecided,
    Cancel,
    Failed,
    Failure,
    Gate,
    Outcome,
    OutcomeUnknown,
    StepState,
    schedule,
    transition,
)
from ..store.runs import AttemptWrite, Batch, ClaimedRun, EventWrite, RunStore, StepRow
from ..tools.base import InvocationContext, ToolAdapter
from .attempt import AttemptResult, run_attempt

_log = structlog.get_logger("planexec.executor.driver")


@dataclass(frozen=True)
class DriverConfig:
    """Limits and timings of a driver."""

    worker_id: str
    lease_ttl_s: float
    heartbeat_s: float
    max_output_bytes: int


class LeaseLostError(RuntimeError):
    """Another worker holds the run now; this driver must stop without writing."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Started:
    attempt: int
    key: str
    started_at: datetime
    durable: bool


class RunDriver:
    """Drives one claimed run to its end, to a gate, or until the lease is lost."""

    def __init__(
        self,
        claimed: ClaimedRun,
        store: RunStore,
        tools: Callable[[str], ToolAdapter | None],
        config: DriverConfig,
        step_slots: asyncio.Semaphore,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.claimed = claimed
        self.run_id = claimed.run_id
        self._store = store
        self._tools = tools
        self._config = config
        self._slots = step_slots
        self._rand = rand
        self.plan = claimed.plan
        self.steps: dict[str, Step] = {s.id: s for s in self.plan.steps}
        self.rows: dict[str, StepRow] = {}
        self.outputs: dict[str, Any] = {}
        self.running: dict[str, asyncio.Task[AttemptResult]] = {}
        self.started: dict[str, _Started] = {}
        self.waiting: dict[str, float] = {}
        self.approved: set[str] = set()
        self.decided: set[str] = set()
        self.failed_run = False
        self.batch = Batch()
        self._done: asyncio.Queue[AttemptResult] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._cancel = claimed.cancel_requested
        self._approvals_seen = 0
        self._draining = False
        self._trace_id: str | None = None
        self._load()
        # Time to first execution: from the run's creation to its first step start.
        self._unstarted_since = (
            None if any(r.first_started_at for r in self.rows.values()) else claimed.created_at
        )

    # -- state ------------------------------------------------------------------------------

    def _load(self) -> None:
        for raw in self.claimed.steps:
            row = StepRow(
                step_id=raw["step_id"],
                status=raw["status"],
                attempts=raw["attempts"],
                output=raw["output"],
                error=raw["error"],
                first_started_at=(
                    datetime.fromisoformat(raw["first_started_at"])
                    if raw["first_started_at"]
                    else None
                ),
            )
            self.rows[row.step_id] = row
            if row.status == StepStatus.SUCCEEDED:
                self.outputs[row.step_id] = row.output
        for step_id, row in self.rows.items():
            if row.status == StepStatus.FAILED:
                self.failed_run = True
            step = self.steps[step_id]
            if step.requires_approval and row.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
                self.decided.add(step_id)

    def _state(self, step_id: str) -> StepState:
        row = self.rows[step_id]
        return StepState(StepStatus(row.status), row.attempts)

    def _apply(self, step_id: str, outcome: Outcome) -> None:
        """Run the transition function and stage its effects in the batch."""
        step = self.steps[step_id]
        row = self.rows[step_id]
        change = transition(step, self._state(step_id), outcome, self._rand)
        attempt = getattr(outcome, "attempt", None)
        row.status = change.after.value
        payload = dict(change.payload)
        if isinstance(outcome, Failed):
            row.error = outcome.failure.as_json()
        elif "error" in payload:
            row.error = payload["error"]
        if change.after in TERMINAL_STEP or change.after is StepStatus.NEEDS_ATTENTION:
            row.finished_at = _now()
        if isinstance(outcome, Gate):
            APPROVALS.opened(self.run_id, step_id)
        elif isinstance(outcome, ApprovalDecided):
            APPROVALS.decided(self.run_id, step_id)
        if change.retry_in_s is not None:
            METRICS.retries.add(1, {"gen_ai.tool.name": step.tool})
            self.waiting[step_id] = time.monotonic() + change.retry_in_s
            row.next_attempt_at = _now() + timedelta(seconds=change.retry_in_s)
        if change.fails_run:
            self.failed_run = True
        self.batch.steps[step_id] = row
        self.batch.events.append(EventWrite(change.event, step_id, attempt, payload))

    def _promote(self, step_id: str) -> None:
        """Move a blocked step whose dependencies are done to ready.

        Only in memory: the next commit of the step records where it went from there.
        """
        row = self.rows[step_id]
        if row.status == StepStatus.BLOCKED:
            row.status = StepStatus.READY.value

    def _open_gate(self, step_id: str) -> None:
        """Wait at the gate with the arguments resolved, so the approver sees what will run."""
        row = self.rows[step_id]
        try:
            row.resolved_args = resolve_args(self.steps[step_id].args, self.outputs)
        except RefResolutionError:
            row.resolved_args = None  # the step will fail with the reason once approved
        self._apply(step_id, Gate())

    # -- recovery ---------------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild from the tables: open attempts and recorded approvals."""
        for open_attempt in self.claimed.open_attempts:
            step_id = open_attempt["step_id"]
            tool = self._tools(self.steps[step_id].tool)
            if tool is not None and tool.spec.idempotent:
                # Re-run with the same idempotency key: the tool deduplicates.
                row = self.rows[step_id]
                row.status = StepStatus.READY.value
                self.batch.steps[step_id] = row
                self.batch.attempts.append(
                    AttemptWrite(
                        step_id,
                        open_attempt["attempt"],
                        open_attempt["idempotency_key"],
                        "failed",
                        started_at=_now(),
                        finished_at=_now(),
                        error={"code": "worker_lost", "message": "worker lost", "retryable": True},
                    )
                )
                self.batch.events.append(
                    EventWrite("step.recovered", step_id, open_attempt["attempt"], {})
                )
            else:
                self._apply(step_id, OutcomeUnknown(open_attempt["attempt"]))
        self._take_approvals(self.claimed.approvals)

    def _take_approvals(self, approvals: list[dict[str, Any]]) -> None:
        self._approvals_seen = max(self._approvals_seen, len(approvals))
        for decision in approvals:
            step_id = decision["step_id"]
            if step_id in self.decided or step_id not in self.steps:
                continue
            self.decided.add(step_id)
            row = self.rows[step_id]
            if row.status == StepStatus.AWAITING_APPROVAL:
                outcome = ApprovalDecided(
                    decision["decision"] == "approve", decision["by"], decision["comment"]
                )
                self._apply(step_id, outcome)
            if decision["decision"] == "approve":
                self.approved.add(step_id)
            elif row.status in (StepStatus.BLOCKED, StepStatus.READY):
                # Rejected before the gate opened: decided at the gate.
                self._apply(step_id, Gate())
                self._apply(step_id, ApprovalDecided(False, decision["by"], decision["comment"]))

    # -- commits ----------------------------------------------------------------------------

    async def _flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, Batch()
        if self._trace_id is not None:
            batch.events = [replace(e, trace_id=e.trace_id or self._trace_id) for e in batch.events]
        result = await self._store.commit(
            self.run_id, self.claimed.lease_token, self._config.worker_id, batch
        )
        if not result.fenced:
            raise LeaseLostError(f"run {self.run_id}: lease lost")
        if result.duplicate_attempts:
            _log.error(
                "duplicate_attempt_outcome",
                run_id=str(self.run_id),
                count=result.duplicate_attempts,
            )
        if result.cancel_requested:
            self._cancel = True

    # -- steps ------------------------------------------------------------------------------

    async def _start(self, step_id: str) -> None:
        step = self.steps[step_id]
        row = self.rows[step_id]
        self._promote(step_id)
        tool = self._tools(step.tool)
        attempt = row.attempts + 1
        if tool is None:
            row.attempts = attempt
            failure = Failure(
                "tool_unavailable", f"tool {step.tool!r} is not in the catalog", retryable=False
            )
            self._apply(step_id, Failed(attempt, failure))
            return
        try:
            args = resolve_args(step.args, self.outputs)
        except RefResolutionError as exc:
            row.attempts = attempt
            self._apply(step_id, Failed(attempt, exc.failure))
            return
        key = idempotency_key(
            self.plan.plan_id, self.plan.version, step.id, args, step.idempotency_key
        )
        now = _now()
        row.attempts = attempt
        row.resolved_args = args
        row.first_started_at = row.first_started_at or now
        if self._unstarted_since is not None:
            waited = (now - self._unstarted_since).total_seconds()
            METRICS.time_to_first_execution.record(max(0.0, waited))
            self._unstarted_since = None
        row.next_attempt_at = None
        durable = not tool.spec.idempotent
        self.started[step_id] = _Started(attempt, key, now, durable)
        if durable:
            # A non-idempotent call is recorded before it is made: after a crash its outcome
            # is unknown and an operator decides, instead of calling it twice.
            row.status = StepStatus.RUNNING.value
            self.batch.steps[step_id] = row
            self.batch.attempts.append(AttemptWrite(step_id, attempt, key, "started", now))
            self.batch.events.append(
                EventWrite("step.started", step_id, attempt, {"idempotency_key": key})
            )
            await self._flush()
        ctx = InvocationContext(
            run_id=self.run_id,
            step_id=step_id,
            attempt=attempt,
            idempotency_key=key,
            timeout_s=step.timeout_s or tool.spec.default_timeout_s,
            tenant=self.plan.tenant,
            first_started_at=row.first_started_at,
            traceparent=self.plan.traceparent,
        )
        self.running[step_id] = asyncio.create_task(self._call(step, tool, args, ctx))

    async def _call(
        self, step: Step, tool: ToolAdapter, args: dict[str, Any], ctx: InvocationContext
    ) -> AttemptResult:
        async with self._slots:
            result = await run_attempt(
                step, tool, args, ctx, max_output_bytes=self._config.max_output_bytes
            )
        await self._done.put(result)
        return result

    def _record(self, result: AttemptResult) -> None:
        step_id = result.step_id
        self.running.pop(step_id, None)
        started = self.started.pop(step_id)
        outcome = result.outcome
        now = _now()
        if not started.durable:
            self.batch.events.append(
                EventWrite(
                    "step.started", step_id, started.attempt, {"idempotency_key": started.key}
                )
            )
        error = outcome.failure.as_json() if isinstance(outcome, Failed) else None
        self.batch.attempts.append(
            AttemptWrite(
                step_id,
                started.attempt,
                started.key,
                "failed" if error else "succeeded",
                started.started_at,
                now,
                round(result.duration_s, 6),
                error,
            )
        )
        if not isinstance(outcome, Failed):
            self.rows[step_id].output = outcome.output
            self.rows[step_id].error = None
            self.outputs[step_id] = outcome.output
        self._apply(step_id, outcome)
        if self.batch.events[-1].type.startswith("step."):
            self.batch.events[-1].payload["duration_s"] = round(result.duration_s, 6)

    # -- the loop ---------------------------------------------------------------------------

    async def drive(self) -> RunStatus | None:
        """Drive the run; the run's status when this driver let go of it, None if lost.

        Cancelling the task that runs ``drive`` abandons in-flight attempts and releases the
        lease at once; ``drain()`` first lets them finish. Runs in a ``run.execute`` span that
        continues the plan's trace (W3C ``traceparent``); its events carry the trace id.
        """
        with TRACER.start_as_current_span(
            "run.execute",
            context=context_from_traceparent(self.plan.traceparent),
            attributes={
                "planexec.run.id": str(self.run_id),
                "planexec.plan.id": str(self.plan.plan_id),
                "planexec.plan.version": self.plan.version,
            },
        ) as span:
            self._trace_id = trace_id_of(span)
            status = await self._drive()
            span.set_attribute("planexec.run.status", status.value if status else "lease_lost")
            return status

    async def _drive(self) -> RunStatus | None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            self._recover()
            return await self._loop()
        except LeaseLostError:
            _log.warning("lease_lost", run_id=str(self.run_id))
            return None
        except asyncio.CancelledError:
            for task in self.running.values():
                task.cancel()
            with contextlib.suppress(LeaseLostError):
                await asyncio.shield(self._release())
            raise
        finally:
            heartbeat.cancel()
            for task in self.running.values():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    def drain(self) -> None:
        """Start no new step; release the lease once in-flight steps are done (SIGTERM)."""
        self._draining = True
        self._wake.set()

    async def _release(self) -> RunStatus:
        """Give the lease back without finishing: the run is re-claimable at once."""
        self.batch.release = True
        self.batch.notify = True
        self.batch.events.append(
            EventWrite("run.released", payload={"worker": self._config.worker_id})
        )
        await self._flush()
        return RunStatus.RUNNING

    async def _loop(self) -> RunStatus:
        while True:
            if self._cancel:
                return await self._finish_cancelled()
            if self._draining and not self.running:
                return await self._release()
            now = time.monotonic()
            for step_id, due in list(self.waiting.items()):
                if due <= now:
                    del self.waiting[step_id]
            plan = schedule(
                self.plan.steps,
                {sid: self._state(sid) for sid in self.steps},
                set(self.running),
                set(self.waiting),
                self.approved,
                self.failed_run,
            )
            if plan.run_status is not None:
                return await self._finish(plan.run_status)
            for step_id in plan.gate:
                self._promote(step_id)
                self._open_gate(step_id)
            if not self._draining:
                for step_id in plan.start:
                    await self._start(step_id)
            if not self.running and not self.waiting and not self._draining:
                continue  # gates opened or starts failed at once: the state moved, look again
            await self._flush()
            await self._wait()

    async def _wait(self) -> None:
        timeout: float | None = None
        if self.waiting:
            timeout = max(0.0, min(self.waiting.values()) - time.monotonic())
        if not self.running and timeout is None:
            timeout = self._config.heartbeat_s
        getter = asyncio.ensure_future(self._done.get())
        waker = asyncio.ensure_future(self._wake.wait())
        done, _ = await asyncio.wait(
            {getter, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            self._record(getter.result())
        else:
            getter.cancel()
        waker.cancel()
        self._wake.clear()
        while not self._done.empty():
            self._record(self._done.get_nowait())

    async def _finish(self, status: RunStatus) -> RunStatus:
        if status is RunStatus.FAILED:
            for step_id, row in self.rows.items():
                if row.status in (
                    StepStatus.BLOCKED,
                    StepStatus.READY,
                    StepStatus.AWAITING_APPROVAL,
                ):
                    self._apply(step_id, Cancel())
        terminal = status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
        self.batch.run_status = status.value
        self.batch.finished = terminal
        self.batch.release = True
        failed = [sid for sid, row in self.rows.items() if row.status == StepStatus.FAILED]
        payload: dict[str, Any] = {"failed_steps": failed} if failed else {}
        if status is RunStatus.FAILED:
            self.batch.run_error = {"failed_steps": failed}
        self.batch.events.append(EventWrite(f"run.{status.value}", payload=payload))
        await self._flush()
        return status

    async def _finish_cancelled(self) -> RunStatus:
        for task in self.running.values():
            task.cancel()
        for step_id in list(self.running):
            self.running.pop(step_id)
            started = self.started.pop(step_id)
            self.batch.attempts.append(
                AttemptWrite(
                    step_id,
                    started.attempt,
                    started.key,
                    "failed",
                    started.started_at,
                    _now(),
                    None,
                    {"code": "cancelled", "message": "run cancelled", "retryable": False},
                )
            )
        for step_id, row in self.rows.items():
            if row.status not in {s.value for s in TERMINAL_STEP}:
                self._apply(step_id, Cancel())
        self.batch.run_status = RunStatus.CANCELLED.value
        self.batch.finished = True
        self.batch.release = True
        self.batch.events.append(EventWrite("run.cancelled"))
        await self._flush()
        return RunStatus.CANCELLED

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_s)
            held, cancel, approvals = await self._store.heartbeat(
                self.run_id, self.claimed.lease_token, self._config.lease_ttl_s
            )
            if not held:
                for task in self.running.values():
                    task.cancel()
                self._cancel = False
                self._wake.set()
                return
            if cancel:
                self._cancel = True
                self._wake.set()
            if approvals > self._approvals_seen:
                self._take_approvals(await self._store.approvals(self.run_id))
                self._wake.set()
