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

from planexec.db.pg import backoff_s, is_transient
from planexec.telemetry import APPROVALS, METRICS, TRACER, context_from_traceparent, trace_id_of
from shared_schemas import OnFailure, Step
from shared_schemas.canonical import sha256_digest

from ..domain.arguments import RefResolutionError, idempotency_key, resolve_args
from ..domain.budget import Spend, over_budget
from ..domain.metering import MeterLock, check_call
from ..domain.states import LEGAL_STEP_TRANSITIONS, TERMINAL_STEP, RunStatus, StepStatus
from ..domain.transitions import (
    ApprovalDecided,
    Cancel,
    Failed,
    Failure,
    Gate,
    IllegalTransitionError,
    Outcome,
    OutcomeUnknown,
    StepState,
    schedule,
    transition,
)
from ..store.runs import AttemptWrite, Batch, ClaimedRun, EventWrite, RunStore, StepRow
from ..tools.base import InvocationContext, ToolAdapter
from .attempt import AttemptResult, run_attempt
from .faults import crash_if
from .gates import Gates
from .modes import RecordedTool, SimulatedTool
from .pinning import divergence_from_pin, spec_hash
from .replan import Replanner, Revised
from .saga import Saga
from .slots import Slot, SlotGate
from .webhook import GateWebhook

_log = structlog.get_logger("planexec.executor.driver")


@dataclass(frozen=True)
class DriverConfig:
    """Limits and timings of a driver."""

    worker_id: str
    lease_ttl_s: float
    heartbeat_s: float
    max_output_bytes: int
    max_recoveries: int = 5
    """Recoveries in a row without a step succeeding before a run is dead-lettered."""
    max_replans: int = 3
    """Replans one run may make (OWASP API4: no replan loops)."""
    approval_timeout_s: float | None = None
    """Default life of an approval gate in seconds; None: gates wait forever."""
    tenant_budget_usd: float | None = None
    """What one tenant may spend per UTC day across its runs, in USD; None: no cap."""
    fault: tuple[str, str | None] | None = None
    """Test-only fault injection point (``engine.faults``)."""
    slots: SlotGate | None = None
    """Per-tool and per-tenant concurrency caps across workers (``engine.slots``); None: no
    tool is capped."""


class LeaseLostError(RuntimeError):
    """Another worker holds the run now; this driver must stop without writing."""


_DB_CLOCK: list[tuple[datetime, float]] = []
"""The database clock seen by this process's latest claim, with the monotonic time then."""


def _now() -> datetime:
    """The database clock, extrapolated with the monotonic clock from the latest claim.

    Timestamps a driver writes (attempt start and finish, retry due times) thus agree with
    the ones Postgres writes even when this host's clock is skewed (RELIABILITY R17); the
    host clock is used only before the first claim.
    """
    if not _DB_CLOCK:
        return datetime.now(UTC)
    seen, at = _DB_CLOCK[-1]
    return seen + timedelta(seconds=time.monotonic() - at)


def _on_host_clock(at: datetime | None) -> datetime | None:
    """A database-clock time as this host's clock reads it.

    For tools that compare it with their own clock (``wait``): a step's first start is
    stored on the database clock.
    """
    return None if at is None or not _DB_CLOCK else at + (datetime.now(UTC) - _now())


def _saw_db_clock(db_now: datetime | None) -> None:
    if db_now is not None:
        _DB_CLOCK[:] = [(db_now, time.monotonic())]


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
        *,
        replanner: Replanner | None = None,
        webhook: GateWebhook | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.claimed = claimed
        self.run_id = claimed.run_id
        self.store = store
        self.real_tool = tools
        self.config = config
        self._slots = step_slots
        self.rand = rand
        self._replanner = replanner
        self.mode = claimed.mode
        self.plan = claimed.plan
        self.steps: dict[str, Step] = {s.id: s for s in self.plan.steps}
        self.rows: dict[str, StepRow] = {}
        self.outputs: dict[str, Any] = {}
        self.running: dict[str, asyncio.Task[AttemptResult]] = {}
        self.started: dict[str, _Started] = {}
        self.waiting: dict[str, float] = {}
        self.gates = Gates(self, webhook)
        self.failed_run = False
        self.batch = Batch()
        self._done: asyncio.Queue[AttemptResult] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._cancel = claimed.cancel_requested
        self._draining = False
        self._trace_id: str | None = None
        self._recorded: dict[str, Any] = {}
        self._attempt_base: dict[str, int] = {}
        self._heartbeat_details: dict[str, Any] = {}
        self._spent = claimed.spent_usd
        self._tenant_spent = claimed.tenant_spent_usd
        self._replans = claimed.replans
        self._claimed_at = time.monotonic()
        _saw_db_clock(claimed.db_now)
        self._slot_waits: dict[str, asyncio.Task[None]] = {}
        """Steps waiting for a slot of their capped tool (``engine.slots``)."""
        self._slot_held: dict[str, Slot] = {}
        """Slots granted to steps not started yet."""
        self._stop_reason: dict[str, Any] | None = None
        self._metered: dict[str, dict[str, Any]] = {}
        """Metered calls checked and about to start: their ``step.started`` ``metered``."""
        self._meter_lock: MeterLock | None = None
        """Held from a metered call's check until its start is committed (``flush``)."""
        self.suspect = claimed.recovery_attempts - int(claimed.recovered) >= 2
        """Claimed as a suspect (recovered twice before without progress): leased alone."""
        self._lost = False
        self._on_progress = on_progress
        self.progressed = False
        """A step of this run succeeded while this driver held it."""
        self._load()
        # Time to first execution: from the run's creation to its first step start.
        self._unstarted_since = (
            None if any(r.first_started_at for r in self.rows.values()) else claimed.created_at
        )

    # -- state ------------------------------------------------------------------------------

    def _load(self) -> None:
        self.rows = {raw["step_id"]: StepRow.from_json(raw) for raw in self.claimed.steps}
        for step_id, row in self.rows.items():
            if row.status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATING):
                self.outputs[step_id] = row.output
            if row.status == StepStatus.FAILED:
                self.failed_run = True
            step = self.steps.get(step_id)
            undecided = (StepStatus.BLOCKED, StepStatus.READY, StepStatus.AWAITING_APPROVAL)
            if step is not None and step.requires_approval and row.status not in undecided:
                self.gates.decided.add(step_id)
        if self.mode != "normal":
            # Nothing real is called in a replay or a dry run: its gates pass by themselves.
            self.gates.approved = {s.id for s in self.plan.steps if s.requires_approval}

    def _tool(self, name: str) -> ToolAdapter | None:
        """The adapter of ``name`` in this run's mode."""
        real = self.real_tool(name)
        if real is None or self.mode == "normal":
            return real
        if self.mode == "dry_run":
            return SimulatedTool(real.spec)
        return RecordedTool(real.spec, self._recorded)

    def held_for_s(self) -> float:
        """Seconds since this driver's claim."""
        return time.monotonic() - self._claimed_at

    def db_now(self) -> datetime:
        """The database clock, extrapolated from the claim.

        Leases and gate deadlines are computed from Postgres time only, never this host's.
        """
        base = self.claimed.db_now or _now()
        return base + timedelta(seconds=time.monotonic() - self._claimed_at)

    def _state(self, step_id: str) -> StepState:
        row = self.rows[step_id]
        return StepState(StepStatus(row.status), row.attempts, self._attempt_base.get(step_id, 0))

    def apply(self, step_id: str, outcome: Outcome) -> None:
        """Run the transition function and stage its effects in the batch."""
        step = self.steps[step_id]
        row = self.rows[step_id]
        change = transition(step, self._state(step_id), outcome, self.rand)
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
            payload |= {"args_hash": row.args_hash, "deadline": _iso(row.gate_deadline)}
            payload["rule_ids"] = self.gates.rule_ids(step_id)
        elif isinstance(outcome, ApprovalDecided):
            APPROVALS.decided(self.run_id, step_id)
        if change.retry_in_s is not None:
            METRICS.retries.add(1, {"gen_ai.tool.name": step.tool})
            self.waiting[step_id] = time.monotonic() + change.retry_in_s
            row.next_attempt_at = _now() + timedelta(seconds=change.retry_in_s)
        if change.fails_run:
            self.failed_run = True
        self._stage(step_id, change.event, attempt, payload)

    def move(
        self, step_id: str, after: StepStatus, event: str, attempt: int | None, payload: Any
    ) -> None:
        """Stage a checked move outside the transition function (compensation, recovery).

        Raises:
            IllegalTransitionError: the move is not in ``LEGAL_STEP_TRANSITIONS``.
        """
        row = self.rows[step_id]
        before = StepStatus(row.status)
        if (before, after) not in LEGAL_STEP_TRANSITIONS:
            raise IllegalTransitionError(f"step {step_id}: {before} -> {after} on {event}")
        row.status = after.value
        self._stage(step_id, event, attempt, payload)

    def _stage(self, step_id: str, event: str, attempt: int | None, payload: Any) -> None:
        self.batch.steps[step_id] = self.rows[step_id]
        self.batch.events.append(EventWrite(event, step_id, attempt, payload))

    def _promote(self, step_id: str) -> None:
        """Move a blocked step whose dependencies are done to ready.

        Only in memory: the next commit of the step records where it went from there.
        """
        row = self.rows[step_id]
        if row.status == StepStatus.BLOCKED:
            row.status = StepStatus.READY.value

    # -- recovery ---------------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild from the tables: open attempts and recorded approvals."""
        for open_attempt in self.claimed.open_attempts:
            step_id = open_attempt["step_id"]
            number = open_attempt["attempt"]
            if step_id not in self.steps:
                continue
            if open_attempt.get("kind") == "compensation":
                self._recover_compensation(step_id, open_attempt)
                continue
            tool = self._tool(self.steps[step_id].tool)
            if tool is not None and tool.spec.idempotent:
                # Re-run with the same idempotency key: the tool deduplicates.
                lost = Failure("worker_lost", "the worker running the attempt was lost", True)
                self.batch.attempts.append(
                    AttemptWrite(
                        step_id,
                        number,
                        open_attempt["idempotency_key"],
                        "failed",
                        started_at=_now(),
                        finished_at=_now(),
                        error=lost.as_json(),
                    )
                )
                self.apply(step_id, Failed(number, lost))
            else:
                self.apply(step_id, OutcomeUnknown(number))
        self.gates.take(self.claimed.approvals)

    def _recover_compensation(self, step_id: str, open_attempt: dict[str, Any]) -> None:
        """A compensation call was in flight when the worker was lost.

        An idempotent one runs again (same key); another waits for an operator.
        """
        compensation = self.steps[step_id].compensation
        tool = self.real_tool(compensation.tool) if compensation is not None else None
        if self.mode != "normal" or (tool is not None and tool.spec.idempotent):
            lost = Failure("worker_lost", "the worker running the compensation was lost", True)
            self.batch.attempts.append(
                AttemptWrite(
                    step_id,
                    open_attempt["attempt"],
                    open_attempt["idempotency_key"],
                    "failed",
                    started_at=_now(),
                    finished_at=_now(),
                    error=lost.as_json(),
                    kind="compensation",
                )
            )
            self.batch.events.append(
                EventWrite("compensation.recovered", step_id, open_attempt["attempt"], {})
            )
            return
        self.rows[step_id].finished_at = _now()
        self.move(
            step_id,
            StepStatus.NEEDS_ATTENTION,
            "compensation.needs_attention",
            open_attempt["attempt"],
            {"reason": "non-idempotent compensation started, outcome unknown"},
        )

    # -- commits ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Commit the staged batch in one statement fenced by the lease token.

        Raises:
            LeaseLostError: another worker holds the run now; nothing was written.
        """
        if not self.batch:
            return
        batch, self.batch = self.batch, Batch()
        if self._trace_id is not None:
            batch.events = [replace(e, trace_id=e.trace_id or self._trace_id) for e in batch.events]
        try:
            result = await self.store.commit(
                self.run_id, self.claimed.lease_token, self.config.worker_id, batch
            )
        finally:
            lock, self._meter_lock = self._meter_lock, None
            if lock is not None:
                await lock.release()
        if not result.fenced:
            raise LeaseLostError(f"run {self.run_id}: lease lost")
        if batch.progress and not self.progressed:
            self.progressed = True
            if self._on_progress is not None:
                self._on_progress()  # a worker holding a suspect may lease again
        if result.duplicate_attempts:
            _log.error(
                "duplicate_attempt_outcome",
                run_id=str(self.run_id),
                count=result.duplicate_attempts,
            )
        if result.cancel_requested:
            self._cancel = True
        self.gates.send_notices()

    # -- steps ------------------------------------------------------------------------------

    def key(self, step_id: str, args: Any, explicit: str | None = None) -> str:
        """The idempotency key of a call of this run (``domain.arguments``)."""
        return idempotency_key(self.plan.plan_id, step_id, args, explicit, self.claimed.key_scope)

    def _spec_changed(self, tool: ToolAdapter) -> bool:
        """Whether a tool's spec differs from the one pinned at run creation (R9)."""
        pinned = self.claimed.tool_specs.get(tool.spec.name)
        return pinned is not None and pinned != spec_hash(tool.spec)

    def _refusal(
        self, step_id: str, real: ToolAdapter | None, tool: ToolAdapter | None
    ) -> tuple[Failure | None, dict[str, Any]]:
        """Why a step may not call its tool now (and its resolved arguments otherwise)."""
        step = self.steps[step_id]
        if tool is None or real is None:
            failure = Failure(
                "tool_unavailable", f"tool {step.tool!r} is not in the catalog", retryable=False
            )
            return failure, {}
        if self._spec_changed(real):
            failure = Failure(
                "tool_spec_changed",
                f"the spec of tool {step.tool!r} changed since the run was created; the run"
                " is pinned to the old one and will not call the new one",
                retryable=False,
            )
            return failure, {}
        try:
            args: dict[str, Any] = resolve_args(step.args, self.outputs)
        except RefResolutionError as exc:
            return exc.failure, {}
        bound = self.gates.hashes.get(step_id)
        if self.mode == "normal" and bound is not None and bound != sha256_digest(args):
            failure = Failure(
                "approval_args_changed",
                "the resolved arguments differ from those the approver saw",
                retryable=False,
            )
            return failure, args
        return None, args

    def _over_budget(self, step_id: str, tool: ToolAdapter) -> bool:
        """Stop the run (it fails, then is compensated) if the step would overspend."""
        stop = over_budget(
            Spend(
                self._spent,
                self.claimed.budget_usd,
                self._tenant_spent,
                self.config.tenant_budget_usd,
            ),
            0.0 if self.mode != "normal" else tool.spec.cost_usd,
        )
        if stop is None:
            return False
        self._stop_reason = {"code": "budget_exceeded", "step_id": step_id, **stop}
        self.failed_run = True
        self.batch.events.append(
            EventWrite("run.budget_exceeded", step_id, None, self._stop_reason)
        )
        return True

    async def _over_meter(self, step_id: str, tool: ToolAdapter, args: dict[str, Any]) -> bool:
        """Stop the run like a budget stop if the call would exceed a cumulative cap (S6).

        A call that fits is remembered in ``_metered`` and its start is committed before it
        is made; see ``domain.metering`` for the ledger and the lock.
        """
        meter = tool.spec.meter
        if meter is None or self.mode != "normal":
            return False
        step = self.steps[step_id]
        verdict = await check_call(
            self.store.pool,
            tenant=self.plan.tenant,
            run_id=self.run_id,
            tool=tool.spec.name,
            meter=meter,
            step_id=step_id,
            idempotency_key=self.key(step_id, args, step.idempotency_key),
            args=args,
        )
        if verdict.stop is None:
            assert verdict.event is not None
            self._metered[step_id] = verdict.event
            self._meter_lock = verdict.lock
            return False
        self._stop_reason = {"code": "meter_exceeded", "step_id": step_id, **verdict.stop}
        self.failed_run = True
        self.batch.events.append(EventWrite("run.meter_exceeded", step_id, None, self._stop_reason))
        return True

    async def _start(self, step_id: str) -> None:
        step = self.steps[step_id]
        row = self.rows[step_id]
        self._promote(step_id)
        slot = self._slot_held.pop(step_id, None)
        tool = self._tool(step.tool)
        attempt = row.attempts + 1
        failure, args = self._refusal(step_id, self.real_tool(step.tool), tool)
        if failure is None and tool is not None and self._over_budget(step_id, tool):
            self._give_back(slot)
            return
        if failure is None and tool is not None and await self._over_meter(step_id, tool, args):
            self._give_back(slot)
            return
        if failure is not None or tool is None:
            assert failure is not None
            self._give_back(slot)
            row.attempts = attempt
            self.apply(step_id, Failed(attempt, failure))
            return
        key = self.key(step.id, args, step.idempotency_key)
        now = _now()
        row.attempts = attempt
        row.resolved_args = args
        row.first_started_at = row.first_started_at or now
        if self._unstarted_since is not None:
            waited = (now - self._unstarted_since).total_seconds()
            METRICS.time_to_first_execution.record(max(0.0, waited))
            self._unstarted_since = None
        row.next_attempt_at = None
        metered = self._metered.pop(step_id, None)
        durable = not tool.spec.idempotent or metered is not None  # metered: the ledger
        self.started[step_id] = _Started(attempt, key, now, durable)
        if durable:
            # A non-idempotent call is recorded before it is made: after a crash its outcome
            # is unknown and an operator decides, instead of calling it twice.
            row.status = StepStatus.RUNNING.value
            self.batch.steps[step_id] = row
            self.batch.attempts.append(AttemptWrite(step_id, attempt, key, "started", now))
            started = {"idempotency_key": key} | ({"metered": metered} if metered else {})
            self.batch.events.append(EventWrite("step.started", step_id, attempt, started))
            await self.flush()
        ctx = InvocationContext(
            run_id=self.run_id,
            step_id=step_id,
            attempt=attempt,
            idempotency_key=key,
            timeout_s=step.timeout_s or tool.spec.default_timeout_s,
            tenant=self.plan.tenant,
            first_started_at=_on_host_clock(row.first_started_at),
            traceparent=self.plan.traceparent,
            heartbeat_details=self._heartbeat_details.get(step_id),
        )
        self.running[step_id] = asyncio.create_task(self._call(step, tool, args, ctx, slot))

    async def _call(
        self,
        step: Step,
        tool: ToolAdapter,
        args: dict[str, Any],
        ctx: InvocationContext,
        slot: Slot | None = None,
    ) -> AttemptResult:
        try:
            async with self._slots:
                crash_if(self.config.fault, "before_call", step.id)
                result = await run_attempt(
                    step, tool, args, ctx, max_output_bytes=self.config.max_output_bytes
                )
                crash_if(self.config.fault, "after_call", step.id)
        finally:
            if slot is not None and self.config.slots is not None:
                await self.config.slots.release(slot)
        await self._done.put(result)
        return result

    # -- tool slots (engine.slots) ----------------------------------------------------------

    def _wait_for_slot(self, step_id: str) -> bool:
        """Whether a step must first get a slot of its capped tool (then one is asked for).

        No database access for an uncapped tool, nor in a replay or a dry run (no real call).
        """
        gate = self.config.slots
        if gate is None or self.mode != "normal" or step_id in self._slot_held:
            return False
        tool = self.steps[step_id].tool
        if not gate.capped(tool):
            return False
        if step_id not in self._slot_waits:
            self._slot_waits[step_id] = asyncio.create_task(self._acquire_slot(step_id, tool))
        return True

    async def _acquire_slot(self, step_id: str, tool: str) -> None:
        gate = self.config.slots
        assert gate is not None
        try:
            slot = await gate.acquire(
                tool,
                tenant=self.plan.tenant,
                run_id=self.run_id,
                step_id=step_id,
                lease_token=self.claimed.lease_token,
            )
        except Exception as exc:  # a bug, not a wait: look again at the next turn
            _log.error("slot_acquire_crashed", run_id=str(self.run_id), error=repr(exc))
        else:
            self._slot_held[step_id] = slot
            if slot.waited_s > 0.5:
                waited_s = round(slot.waited_s, 3)
                _log.info("slot_waited", run_id=str(self.run_id), step=step_id, waited_s=waited_s)
        finally:
            self._slot_waits.pop(step_id, None)
            self._wake.set()

    async def _start_all(self, step_ids: list[str]) -> None:
        """Start the steps; those of a capped tool first wait for a slot (in the background)."""
        for step_id in step_ids:
            if not self._wait_for_slot(step_id):
                await self._start(step_id)

    def _give_back(self, slot: Slot | None) -> None:
        """Release a granted slot whose step will not call its tool after all."""
        if slot is not None and self.config.slots is not None:
            self.config.slots.release_soon(slot)

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
        cost = self._cost(step_id, result)
        if isinstance(outcome, Failed):
            details = outcome.failure.details or {}
            if "heartbeat" in details:
                self._heartbeat_details[step_id] = details["heartbeat"]
        else:
            self.rows[step_id].output = outcome.output
            self.rows[step_id].error = None
            self.outputs[step_id] = outcome.output
            self.batch.progress = True
        self.apply(step_id, outcome)
        last = self.batch.events[-1]
        if last.type.startswith("step."):
            last.payload["duration_s"] = round(result.duration_s, 6)
            if cost:
                last.payload["cost_usd"] = cost
            if self.mode != "normal":
                last.payload["mode"] = self.mode

    def _cost(self, step_id: str, result: AttemptResult) -> float:
        """What an attempt cost in USD: the tool's report, else its spec's estimate."""
        if self.mode != "normal":
            return 0.0
        tool = self.real_tool(self.steps[step_id].tool)
        estimate = tool.spec.cost_usd if tool is not None else 0.0
        cost = result.cost_usd if result.cost_usd > 0 else estimate
        self._spent += cost
        self._tenant_spent += cost
        self.batch.spent_usd += cost
        return cost

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
                "planexec.run.mode": self.mode,
            },
        ) as span:
            self._trace_id = trace_id_of(span)
            status = await self._drive()
            span.set_attribute("planexec.run.status", status.value if status else "lease_lost")
            return status

    async def _drive(self) -> RunStatus | None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            divergence = divergence_from_pin(self.plan, self.claimed.content_hash, set(self.rows))
            if divergence is not None:
                return await self._finish_diverged(divergence)
            if self.mode == "replay" and self.claimed.parent_run_id is not None:
                self._recorded = await self.store.recorded_outputs(self.claimed.parent_run_id)
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
            for waiter in list(self._slot_waits.values()):
                waiter.cancel()  # held slots end with the lease, which ends with the drive
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
            EventWrite("run.released", payload={"worker": self.config.worker_id})
        )
        await self.flush()
        return RunStatus.RUNNING

    def _compensating(self) -> bool:
        return any(r.status == StepStatus.COMPENSATING for r in self.rows.values())

    async def _loop(self) -> RunStatus:
        while True:
            if self._lost:
                raise LeaseLostError(f"run {self.run_id}: lease lost (heartbeat)")
            if self._cancel and not self._compensating():
                return await self._finish_cancelled()
            if self._draining and not self.running:
                return await self._release()
            await self.gates.expire()
            now = time.monotonic()
            for step_id, due in list(self.waiting.items()):
                if due <= now:
                    del self.waiting[step_id]
            plan = schedule(
                self.plan.steps,
                {sid: self._state(sid) for sid in self.steps},
                set(self.running),
                set(self.waiting) | set(self._slot_waits),
                self.gates.approved,
                self.failed_run,
            )
            if plan.run_status is RunStatus.FAILED and await self._replan():
                continue
            if plan.run_status is not None:
                return await self._finish(plan.run_status)
            for step_id in plan.gate:
                self._promote(step_id)
                self.gates.open(step_id)
            if not self._draining:
                await self._start_all(plan.start)
            waiting = self.waiting or self._slot_waits
            if not self.running and not waiting and not self._draining:
                continue  # gates opened or starts failed at once: the state moved, look again
            await self.flush()
            await self._wait()

    async def _wait(self) -> None:
        timeouts = [self.config.heartbeat_s] if not self.running else []
        if self.waiting:
            timeouts.append(max(0.0, min(self.waiting.values()) - time.monotonic()))
        deadline = self.gates.next_deadline()
        if deadline is not None:
            timeouts.append(max(0.0, (deadline - self.db_now()).total_seconds()))
        timeout = min(timeouts) if timeouts else None
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
        for step_id in list(self._slot_held):
            self._give_back(self._slot_held.pop(step_id))  # granted, never to be used
        compensation_failed: list[str] = []
        if status is RunStatus.FAILED:
            for step_id, row in self.rows.items():
                if row.status in (
                    StepStatus.BLOCKED,
                    StepStatus.READY,
                    StepStatus.AWAITING_APPROVAL,
                ):
                    self.apply(step_id, Cancel())
            compensation_failed = await Saga(self).compensate()
            if any(r.status == StepStatus.NEEDS_ATTENTION for r in self.rows.values()):
                status = RunStatus.NEEDS_ATTENTION  # an unknown outcome: an operator decides
        terminal = status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
        self.batch.run_status = status.value
        self.batch.finished = terminal
        self.batch.release = True
        if status is RunStatus.PAUSED:
            self.batch.wake_at = self.gates.next_deadline()
        failed = [sid for sid, row in self.rows.items() if row.status == StepStatus.FAILED]
        payload: dict[str, Any] = {"failed_steps": failed} if failed else {}
        compensated = [
            sid for sid, row in self.rows.items() if row.status == StepStatus.COMPENSATED
        ]
        if compensated:
            payload["compensated_steps"] = compensated
        if compensation_failed:
            payload["compensation_failed"] = compensation_failed
        if self._stop_reason is not None:
            payload["stopped"] = self._stop_reason
        if status is RunStatus.FAILED:
            self.batch.run_error = payload
        self.batch.events.append(EventWrite(f"run.{status.value}", payload=payload))
        await self.flush()
        return status

    async def _finish_diverged(self, reason: str) -> RunStatus:
        """Fail a run whose stored state contradicts its pinned plan; call nothing."""
        _log.error("run_diverged", run_id=str(self.run_id), reason=reason)
        error = {"code": "plan_divergence", "message": reason}
        self.batch.run_status = RunStatus.FAILED.value
        self.batch.run_error = error
        self.batch.finished = True
        self.batch.release = True
        self.batch.events.append(EventWrite("run.failed", payload=error))
        await self.flush()
        return RunStatus.FAILED

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
        cancellable = {
            StepStatus.BLOCKED,
            StepStatus.READY,
            StepStatus.RUNNING,
            StepStatus.AWAITING_APPROVAL,
            StepStatus.NEEDS_ATTENTION,
        }
        for step_id, row in self.rows.items():
            if row.status in cancellable:
                self.apply(step_id, Cancel())
        self.batch.run_status = RunStatus.CANCELLED.value
        self.batch.finished = True
        self.batch.release = True
        self.batch.events.append(EventWrite("run.cancelled"))
        await self.flush()
        return RunStatus.CANCELLED

    # -- replan -----------------------------------------------------------------------------

    async def _replan(self) -> bool:
        """Switch to a revised plan version when a step asked for it; True when it did."""
        failed = [
            sid
            for sid, row in self.rows.items()
            if row.status == StepStatus.FAILED and self.steps[sid].on_failure is OnFailure.REPLAN
        ]
        if not failed or self._replanner is None or self.mode != "normal":
            return False
        if self._replans >= self.config.max_replans:
            self.batch.events.append(
                EventWrite(
                    "replan.refused",
                    failed[0],
                    payload={"reason": f"the run made {self._replans} replans, the cap"},
                )
            )
            return False
        await self.flush()
        outcome = await self._replanner.replan(self, failed[0])
        if outcome is None:
            return False
        self._switch(outcome)
        return True

    def _switch(self, revised: Revised) -> None:
        """Continue on the revised version with the carried-over steps (already stored)."""
        self.plan = revised.plan
        self.claimed = replace(
            self.claimed,
            plan=revised.plan,
            policy_decisions=revised.policy_decisions,
            content_hash=revised.plan.content_hash or "",
            tool_specs=revised.tool_specs,
        )
        self.steps = {s.id: s for s in self.plan.steps}
        self.rows = {row.step_id: row for row in revised.rows}
        self.outputs = {
            sid: row.output for sid, row in self.rows.items() if row.status == StepStatus.SUCCEEDED
        }
        self._attempt_base = {
            row.step_id: row.attempts for row in revised.rows if row.status != "succeeded"
        }
        self.gates.keep_only(set(self.outputs))
        self.failed_run = False
        self._replans += 1

    # -- lease ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew the lease every ``heartbeat_s``; give the run up once the lease may be gone.

        A renewal that fails on a transient database error (a restart, a partition) is
        retried with backoff: the lease lasts ``lease_ttl_s`` from the last renewal sent
        that held. Past that another worker may hold the run, so the driver lets it go
        as if told so (its calls are cancelled; its writes would be fenced anyway).
        """
        renewed, failures = self._claimed_at, 0
        while True:
            ttl, every = self.config.lease_ttl_s, self.config.heartbeat_s
            await asyncio.sleep(backoff_s(failures, cap_s=every) if failures else every)
            sent = time.monotonic()
            try:
                if sent >= renewed + ttl:
                    raise TimeoutError(f"no lease renewal for {ttl:g} s")
                held, cancel, approvals = await asyncio.wait_for(
                    self.store.heartbeat(self.run_id, self.claimed.lease_token, ttl),
                    renewed + ttl - sent,
                )
                if held and approvals > self.gates.seen:
                    self.gates.take(await self.store.approvals(self.run_id))
                    self._wake.set()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                expired = time.monotonic() >= renewed + ttl
                _log.warning(
                    "heartbeat_failed",
                    run_id=str(self.run_id),
                    failures=failures,
                    lease_expired=expired,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if not expired:
                    continue
                held, cancel = False, False
            else:
                renewed, failures = sent, 0
            if not held:
                for task in self.running.values():
                    task.cancel()
                self._cancel = False
                self._lost = True
                self._wake.set()
                return
            if cancel:
                self._cancel = True
                self._wake.set()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
