"""The run store: run creation, leases, fenced group commits, reads for the API.

Writes made while driving a run are fenced by the lease token: a worker whose lease was taken
over (a paused or partitioned zombie) changes nothing, because its ``UPDATE ... WHERE
lease_token = :mine`` matches no row and every other write of the statement selects from it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from planexec.db.pg import backoff_s, is_transient, named
from shared_schemas import Plan, PolicyDecision

from . import sql

_log = structlog.get_logger("planexec.executor.store")

_CREATE_RUN = named(sql.CREATE_RUN)
_CREATE_REFUSED_RUN = named(sql.CREATE_REFUSED_RUN)
_CLAIM_RUNS = named(sql.CLAIM_RUNS)
_CLAIM_SUSPECT = named(sql.CLAIM_SUSPECT)
_COMMITS = {
    (approvals, spend): named(sql.commit_sql(approvals=approvals, spend=spend))
    for approvals in (False, True)
    for spend in (False, True)
}
_HEARTBEAT = named(sql.HEARTBEAT)
_APPROVALS = named(sql.NEW_APPROVALS)
_EXISTING_RUN = named(sql.EXISTING_RUN)
_RECORDED_OUTPUTS = named(
    "SELECT step_id, output FROM executor.steps WHERE run_id = :run_id"
    " AND status IN ('succeeded', 'compensating', 'compensated')"
)
_REPLAN = named(sql.REPLAN)
_EXPIRE_GATES = named(sql.EXPIRE_GATES)
_COMMIT_LANDED = named(
    "SELECT r.lease_token = :token AS held, r.lease_token IS NULL AS free, r.cancel_requested,"
    " (SELECT coalesce(jsonb_agg(jsonb_build_array(e.type, e.step_id, e.attempt)"
    "  ORDER BY e.seq), '[]') FROM (SELECT seq, type, step_id, attempt"
    "  FROM executor.run_events WHERE run_id = :run_id ORDER BY seq DESC LIMIT :n) e) AS last"
    " FROM executor.runs r WHERE r.run_id = :run_id"
)
"""Whether a commit of unknown outcome landed: its events are the run's last ones."""
_COMPENSATION_ATTEMPTS = named(
    "SELECT step_id, max(attempt) AS attempts FROM executor.attempts"
    " WHERE run_id = :run_id AND kind = 'compensation' GROUP BY step_id"
)


@dataclass
class StepRow:
    """A step's persisted state, as the driver keeps it in memory."""

    step_id: str
    status: str
    attempts: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    resolved_args: Any = None
    next_attempt_at: datetime | None = None
    first_started_at: datetime | None = None
    finished_at: datetime | None = None
    args_hash: str | None = None
    """Hash of the resolved arguments shown at the approval gate."""
    gate_deadline: datetime | None = None
    """When the open approval gate expires (counts as a rejection)."""

    def as_json(self) -> dict[str, Any]:
        """The row as ``jsonb_to_recordset`` input."""
        return {
            "step_id": self.step_id,
            "status": self.status,
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error,
            "resolved_args": self.resolved_args,
            "next_attempt_at": _iso(self.next_attempt_at),
            "first_started_at": _iso(self.first_started_at),
            "finished_at": _iso(self.finished_at),
            "args_hash": self.args_hash,
            "gate_deadline": _iso(self.gate_deadline),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StepRow:
        """A row from its JSON form in the claim statement."""

        def when(key: str) -> datetime | None:
            value = raw.get(key)
            return datetime.fromisoformat(value) if value else None

        return cls(
            step_id=raw["step_id"],
            status=raw["status"],
            attempts=raw["attempts"],
            output=raw["output"],
            error=raw["error"],
            resolved_args=raw.get("resolved_args"),
            first_started_at=when("first_started_at"),
            finished_at=when("finished_at"),
            args_hash=raw.get("args_hash"),
            gate_deadline=when("gate_deadline"),
        )


@dataclass(frozen=True)
class AttemptWrite:
    """An attempt row to insert or finish."""

    step_id: str
    attempt: int
    idempotency_key: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    duration_s: float | None = None
    error: dict[str, Any] | None = None
    kind: str = "action"
    """``action`` (the step's call) or ``compensation`` (its undo)."""


@dataclass(frozen=True)
class ApprovalWrite:
    """A decision the driver records itself (an expired gate counts as a rejection)."""

    step_id: str
    decision: str
    by: str
    comment: str | None
    args_hash: str | None


@dataclass(frozen=True)
class EventWrite:
    """A run event to append (its ``seq`` is assigned in the commit)."""

    type: str
    step_id: str | None = None
    attempt: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None


@dataclass
class Batch:
    """Everything one group commit writes."""

    steps: dict[str, StepRow] = field(default_factory=dict)
    attempts: list[AttemptWrite] = field(default_factory=list)
    events: list[EventWrite] = field(default_factory=list)
    run_status: str | None = None
    run_error: dict[str, Any] | None = None
    finished: bool = False
    release: bool = False
    notify: bool = False
    approvals: list[ApprovalWrite] = field(default_factory=list)
    wake_at: datetime | None = None
    """When a released, paused run must be claimed again (its first gate deadline)."""
    spent_usd: float = 0.0
    """Cost of the attempts in this batch, in USD (added to the run and the tenant's day)."""
    progress: bool = False
    """A step succeeded: the run's count of recoveries without progress starts again."""

    def __bool__(self) -> bool:
        return bool(self.steps or self.attempts or self.events or self.run_status)


@dataclass(frozen=True)
class CommitResult:
    """What a fenced commit did."""

    fenced: bool
    """False when the lease was lost: nothing was written."""
    cancel_requested: bool
    duplicate_attempts: int
    """Attempt outcomes that were already recorded (a second writer, detected)."""


@dataclass(frozen=True)
class ClaimedRun:
    """A leased run with what is needed to rebuild its state."""

    tenant: str
    run_id: uuid.UUID
    plan: Plan
    policy_decisions: list[PolicyDecision]
    lease_token: uuid.UUID
    cancel_requested: bool
    traceparent: str | None
    steps: list[dict[str, Any]]
    open_attempts: list[dict[str, Any]]
    approvals: list[dict[str, Any]]
    created_at: datetime | None = None
    """When the run was created (database clock)."""
    status: str = "running"
    """``running``, or ``dead_letter`` when this claim dead-lettered the run instead."""
    mode: str = "normal"
    """``normal``, ``replay`` (recorded outputs) or ``dry_run`` (simulated outputs)."""
    parent_run_id: uuid.UUID | None = None
    """The run this one was forked, retried or replayed from."""
    key_scope: str | None = None
    """Extra input of the idempotency keys (a fork's own run id), or None."""
    content_hash: str = ""
    """The pinned plan's content hash as recorded at run creation."""
    budget_usd: float | None = None
    spent_usd: float = 0.0
    tool_specs: dict[str, str] = field(default_factory=dict)
    """Pinned hash of each used tool's spec at run creation."""
    replans: int = 0
    recovery_attempts: int = 0
    """Recoveries in a row without progress, this claim included."""
    recovered: bool = False
    """The previous lease holder never let go (crash or partition)."""
    tenant_spent_usd: float = 0.0
    """What the tenant spent today (UTC day, database clock) when the run was claimed."""
    db_now: datetime | None = None
    """The database clock at the claim: deadlines are computed from it, not the host's."""


@dataclass(frozen=True)
class NewRun:
    """How to create a run beyond its plan: mode, lineage, carried-over steps, budget."""

    mode: str = "normal"
    parent_run_id: uuid.UUID | None = None
    fork_from_step: str | None = None
    key_scope: str | None = None
    dedup_key: str | None = None
    """Unique per tenant; default ``plan:<plan_id>:<version>`` for a normal root run."""
    request_hash: str | None = None
    budget_usd: float | None = None
    tool_specs: dict[str, str] = field(default_factory=dict)
    carried: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Steps that start succeeded: ``{step_id: {"output": ..., "resolved_args": ...}}``."""


class IdempotencyKeyReusedError(ValueError):
    """A run-creation key was used before with a different request."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class RunStore:
    """The engine's statements, on an asyncpg pool (``planexec.db.pg``); each is one commit."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool this store runs on.

        For engine modules with statements of their own: ``domain.metering``'s ledger read and
        advisory lock.
        """
        return self._pool

    async def _existing(self, tenant: str, dedup_key: str) -> tuple[uuid.UUID, str | None]:
        row = await self._pool.fetchrow(
            _EXISTING_RUN.sql, *_EXISTING_RUN.args({"tenant": tenant, "dedup_key": dedup_key})
        )
        return row["run_id"], row["request_hash"]

    async def create_run(
        self,
        plan: Plan,
        decisions: list[PolicyDecision],
        *,
        created_by: str,
        trace_id: str | None = None,
        new: NewRun | None = None,
    ) -> tuple[uuid.UUID, bool]:
        """Create a run once: (run id, True), or the existing run's (id, False).

        A normal root run is unique per plan version (DESIGN §5) unless ``new.dedup_key``
        (a client's ``Idempotency-Key``) says otherwise; forks, retries, replays and dry runs
        are unique only by their own key.

        Raises:
            IdempotencyKeyReusedError: the key was used with another ``request_hash``.
        """
        new = new or NewRun()
        run_id = uuid.uuid4()
        dedup_key = new.dedup_key
        if dedup_key is None and new.mode == "normal" and new.parent_run_id is None:
            dedup_key = f"plan:{plan.plan_id}:{plan.version}"
        steps: list[dict[str, Any]] = []
        for s in plan.steps:
            carried = new.carried.get(s.id)
            if carried is not None:
                steps.append({"step_id": s.id, "status": "succeeded", **carried})
            else:
                steps.append({"step_id": s.id, "status": "blocked" if s.depends_on else "ready"})
        event: dict[str, Any] = {
            "plan_id": str(plan.plan_id),
            "version": plan.version,
            "content_hash": plan.content_hash,
            "catalog_version": plan.catalog_version,
            "policy_version": plan.policy_version,
            "created_by": created_by,
            "mode": new.mode,
        }
        if new.parent_run_id is not None:
            event |= {"parent_run_id": str(new.parent_run_id), "carried": sorted(new.carried)}
        if new.fork_from_step is not None:
            event["fork_from_step"] = new.fork_from_step
        if new.budget_usd is not None:
            event["budget_usd"] = new.budget_usd
        params = {
            "tenant": plan.tenant,
            "run_id": run_id,
            "plan_id": plan.plan_id,
            "version": plan.version,
            "content_hash": plan.content_hash,
            "catalog_version": plan.catalog_version,
            "policy_version": plan.policy_version,
            "plan": plan.model_dump_json(),
            "decisions": json.dumps([d.model_dump(mode="json") for d in decisions]),
            "created_by": created_by,
            "traceparent": plan.traceparent,
            "steps": json.dumps(steps),
            "event": json.dumps(event),
            "trace_id": trace_id,
            "mode": new.mode,
            "parent_run_id": new.parent_run_id,
            "fork_from_step": new.fork_from_step,
            "key_scope": new.key_scope,
            "dedup_key": dedup_key,
            "request_hash": new.request_hash,
            "budget_usd": new.budget_usd,
            "tool_specs": json.dumps(new.tool_specs),
        }
        row = await self._pool.fetchrow(_CREATE_RUN.sql, *_CREATE_RUN.args(params))
        if row["created"] is not None:
            return row["created"], True
        assert dedup_key is not None  # only a unique key can conflict
        existing, request_hash = await self._existing(plan.tenant, dedup_key)
        if new.request_hash is not None and request_hash != new.request_hash:
            raise IdempotencyKeyReusedError(dedup_key)
        return existing, False

    async def create_refused_run(
        self, plan: Plan, decisions: list[PolicyDecision], code: str, message: str
    ) -> tuple[uuid.UUID, bool]:
        """Record a dispatched plan that failed admission as a failed run with the reason."""
        error = {"code": code, "message": message}
        dedup_key = f"plan:{plan.plan_id}:{plan.version}"
        params = {
            "tenant": plan.tenant,
            "run_id": uuid.uuid4(),
            "plan_id": plan.plan_id,
            "version": plan.version,
            "content_hash": plan.content_hash,
            "catalog_version": plan.catalog_version,
            "policy_version": plan.policy_version,
            "plan": plan.model_dump_json(),
            "decisions": json.dumps([d.model_dump(mode="json") for d in decisions]),
            "created_by": plan.created_by,
            "traceparent": plan.traceparent,
            "error": json.dumps(error),
            "steps": json.dumps([{"step_id": s.id} for s in plan.steps]),
            "dedup_key": dedup_key,
        }
        row = await self._pool.fetchrow(_CREATE_REFUSED_RUN.sql, *_CREATE_REFUSED_RUN.args(params))
        if row["created"] is not None:
            return row["created"], True
        existing, _ = await self._existing(plan.tenant, dedup_key)
        return existing, False

    async def claim_runs(
        self,
        worker: str,
        *,
        limit: int,
        ttl_s: float,
        max_recoveries: int = 5,
        suspects: bool = False,
    ) -> list[ClaimedRun]:
        """Lease up to ``limit`` runnable runs to ``worker`` (``FOR UPDATE SKIP LOCKED``).

        Runnable: pending, running with an expired lease, or paused with a gate deadline
        due. Runs recovered twice in a row without progress ("suspects") are leased only
        with ``suspects=True``, one at a time. A run
        recovered more than ``max_recoveries`` times in a row without a step succeeding is
        dead-lettered instead (returned with ``status="dead_letter"``).
        """
        claim = _CLAIM_SUSPECT if suspects else _CLAIM_RUNS
        params = {"worker": worker, "limit": limit, "ttl_s": ttl_s}
        rows = await self._pool.fetch(
            claim.sql, *claim.args(params | {"max_recoveries": max_recoveries})
        )
        return [
            ClaimedRun(
                tenant=row["tenant"],
                run_id=row["run_id"],
                plan=Plan.model_validate(row["plan"]),
                policy_decisions=[
                    PolicyDecision.model_validate(d) for d in row["policy_decisions"]
                ],
                lease_token=row["lease_token"],
                cancel_requested=row["cancel_requested"],
                traceparent=row["traceparent"],
                steps=row["steps"],
                open_attempts=row["open_attempts"],
                approvals=row["approvals"],
                created_at=row["created_at"],
                status=row["status"],
                mode=row["mode"],
                parent_run_id=row["parent_run_id"],
                key_scope=row["key_scope"],
                content_hash=row["content_hash"],
                budget_usd=row["budget_usd"],
                spent_usd=row["spent_usd"],
                tool_specs=row["tool_specs"],
                replans=row["replans"],
                recovery_attempts=row["recovery_attempts"],
                recovered=row["recovered"],
                tenant_spent_usd=float(row["tenant_spent_usd"]),
                db_now=row["db_now"],
            )
            for row in rows
        ]

    async def commit(
        self, run_id: uuid.UUID, token: uuid.UUID, worker: str, batch: Batch
    ) -> CommitResult:
        """Write a batch in one statement, fenced by the lease token; exactly once.

        When the database restarts or becomes unreachable mid-commit (``is_transient``),
        the outcome is unknown: the statement may have been committed before the connection
        broke. Sending it again could write its events twice, so it is resent only once a
        read shows it did not land: while the lease is held nobody else appends events to
        the run, so the batch landed iff its events are the run's last ones. This repeats,
        with backoff, until the database answers; the common path is one round trip.

        Returns:
            ``fenced=False`` when the lease is lost (nothing of the batch was written, or
            whether it was no longer matters to this holder).

        Raises:
            asyncpg.PostgresError: a non-transient error of the statement.
        """
        failures = 0
        while True:
            try:
                if failures == 0:
                    return await self._commit_once(run_id, token, worker, batch)
                landed = await self._commit_landed(run_id, token, batch)
                _log.info(
                    "commit_reconciled",
                    run_id=str(run_id),
                    outcome="resent" if landed is None else "landed" if landed.fenced else "lost",
                    failures=failures,
                )
                if landed is not None:
                    return landed
                return await self._commit_once(run_id, token, worker, batch)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                _log.warning(
                    "commit_outcome_unknown",
                    run_id=str(run_id),
                    failures=failures,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(backoff_s(failures))

    async def _commit_landed(
        self, run_id: uuid.UUID, token: uuid.UUID, batch: Batch
    ) -> CommitResult | None:
        """What became of a commit of unknown outcome; None: it did not land, send it again.

        While the token still holds the lease, only this holder appended events since its
        claim, so the batch landed iff its events (type, step, attempt) are the run's last
        ones. Once the token is gone, a new holder may have written the very same events
        (it repeats the same steps with the same attempt numbers): a match then proves
        nothing, and the batch counts as landed only when it released the lease and the
        lease is still free (the run is where this holder meant to leave it, whoever wrote
        it); otherwise the lease is lost. A batch without events is idempotent to resend
        (the same rows, attempts ``ON CONFLICT``), and every staged change appends one.
        """
        mine = [[e.type, e.step_id, e.attempt] for e in batch.events]
        row = await self._pool.fetchrow(
            _COMMIT_LANDED.sql,
            *_COMMIT_LANDED.args({"run_id": run_id, "token": token, "n": len(mine)}),
        )
        if row is None:
            return CommitResult(fenced=False, cancel_requested=False, duplicate_attempts=0)
        cancel = bool(row["cancel_requested"])
        matches = bool(mine) and row["last"] == mine
        if row["held"]:
            if not matches:
                return None
        elif not (matches and batch.release and row["free"]):
            return CommitResult(fenced=False, cancel_requested=cancel, duplicate_attempts=0)
        return CommitResult(fenced=True, cancel_requested=cancel, duplicate_attempts=0)

    async def _commit_once(
        self, run_id: uuid.UUID, token: uuid.UUID, worker: str, batch: Batch
    ) -> CommitResult:
        params = {
            "run_id": run_id,
            "token": token,
            "worker": worker,
            "n": len(batch.events),
            "run_status": batch.run_status,
            "run_error": None if batch.run_error is None else json.dumps(batch.run_error),
            "finished": batch.finished,
            "release": batch.release,
            "notify": batch.notify,
            "wake_at": batch.wake_at,
            "spent_usd": batch.spent_usd,
            "progress": batch.progress,
            "approvals": json.dumps(
                [
                    {
                        "step_id": a.step_id,
                        "decision": a.decision,
                        "by": a.by,
                        "comment": a.comment,
                        "args_hash": a.args_hash,
                    }
                    for a in batch.approvals
                ]
            ),
            "steps": json.dumps([row.as_json() for row in batch.steps.values()]),
            "attempts": json.dumps(
                [
                    {
                        "step_id": a.step_id,
                        "kind": a.kind,
                        "attempt": a.attempt,
                        "idempotency_key": a.idempotency_key,
                        "status": a.status,
                        "started_at": _iso(a.started_at),
                        "finished_at": _iso(a.finished_at),
                        "duration_s": a.duration_s,
                        "error": a.error,
                    }
                    for a in batch.attempts
                ]
            ),
            "events": json.dumps(
                [
                    {
                        "i": i,
                        "type": e.type,
                        "step_id": e.step_id,
                        "attempt": e.attempt,
                        "payload": e.payload,
                        "trace_id": e.trace_id,
                    }
                    for i, e in enumerate(batch.events)
                ]
            ),
        }
        statement = _COMMITS[(bool(batch.approvals), batch.spent_usd > 0)]
        row = await self._pool.fetchrow(statement.sql, *statement.args(params))
        return CommitResult(
            fenced=bool(row["fenced"]),
            cancel_requested=bool(row["cancel_requested"]),
            duplicate_attempts=len(batch.attempts) - int(row["attempts"]) if row["fenced"] else 0,
        )

    async def heartbeat(
        self, run_id: uuid.UUID, token: uuid.UUID, ttl_s: float
    ) -> tuple[bool, bool, int]:
        """Renew a lease: (still held, cancel requested, number of approvals recorded)."""
        row = await self._pool.fetchrow(
            _HEARTBEAT.sql, *_HEARTBEAT.args({"run_id": run_id, "token": token, "ttl_s": ttl_s})
        )
        if row is None:
            return False, False, 0
        return True, bool(row["cancel_requested"]), int(row["approvals"])

    async def approvals(self, run_id: uuid.UUID) -> list[dict[str, Any]]:
        """Approval decisions recorded for a run."""
        rows = await self._pool.fetch(_APPROVALS.sql, *_APPROVALS.args({"run_id": run_id}))
        return [dict(row) for row in rows]

    async def recorded_outputs(self, run_id: uuid.UUID) -> dict[str, Any]:
        """Outputs a run recorded, by step id (what a replay of it returns)."""
        rows = await self._pool.fetch(
            _RECORDED_OUTPUTS.sql, *_RECORDED_OUTPUTS.args({"run_id": run_id})
        )
        return {row["step_id"]: row["output"] for row in rows}

    async def replan(
        self,
        run_id: uuid.UUID,
        token: uuid.UUID,
        plan: Plan,
        decisions: list[PolicyDecision],
        steps: list[StepRow],
        event: dict[str, Any],
        tool_specs: dict[str, str],
    ) -> bool:
        """Switch a leased run to a revised plan version in one fenced statement.

        ``steps`` are the new version's rows (carried-over steps keep their output); rows
        and approvals of steps not in ``steps`` are removed, attempts and events are kept.

        Returns:
            False when the lease was lost (nothing was written).
        """
        params = {
            "run_id": run_id,
            "token": token,
            "version": plan.version,
            "content_hash": plan.content_hash,
            "catalog_version": plan.catalog_version,
            "policy_version": plan.policy_version,
            "plan": plan.model_dump_json(),
            "decisions": json.dumps([d.model_dump(mode="json") for d in decisions]),
            "steps": json.dumps([row.as_json() for row in steps]),
            "keep": [row.step_id for row in steps],
            "event": json.dumps(event),
            "tool_specs": json.dumps(tool_specs),
        }
        row = await self._pool.fetchrow(_REPLAN.sql, *_REPLAN.args(params))
        return bool(row["fenced"])

    async def expire_gates(self, run_id: uuid.UUID, token: uuid.UUID) -> int:
        """Reject each gate of a leased run past its deadline (database clock).

        The rejection is recorded by ``system:deadline``; an approver's decision already on
        record wins.

        Returns:
            How many gates expired now.
        """
        row = await self._pool.fetchrow(
            _EXPIRE_GATES.sql, *_EXPIRE_GATES.args({"run_id": run_id, "token": token})
        )
        return int(row["expired"])

    async def compensation_attempts(self, run_id: uuid.UUID) -> dict[str, int]:
        """The highest compensation attempt number recorded per step."""
        rows = await self._pool.fetch(
            _COMPENSATION_ATTEMPTS.sql, *_COMPENSATION_ATTEMPTS.args({"run_id": run_id})
        )
        return {row["step_id"]: int(row["attempts"]) for row in rows}
