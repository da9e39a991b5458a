"""The run store: run creation, leases, fenced group commits, reads for the API.

Writes made while driving a run are fenced by the lease token: a worker whose lease was taken
over (a paused or partitioned zombie) changes nothing, because its ``UPDATE ... WHERE
lease_token = :mine`` matches no row and every other write of the statement selects from it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from planexec.db.pg import named
from shared_schemas import Plan, PolicyDecision

from . import sql

_CREATE_RUN = named(sql.CREATE_RUN)
_CREATE_REFUSED_RUN = named(sql.CREATE_REFUSED_RUN)
_CLAIM_RUNS = named(sql.CLAIM_RUNS)
_COMMIT = named(sql.COMMIT)
_HEARTBEAT = named(sql.HEARTBEAT)
_APPROVALS = named(sql.NEW_APPROVALS)
_EXISTING_RUN = named(
    "SELECT run_id FROM executor.runs WHERE tenant = :tenant AND plan_id = :plan_id"
    " AND plan_version = :version"
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
        }


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


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class RunStore:
    """The engine's statements, on an asyncpg pool (``planexec.db.pg``); each is one commit."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _existing(self, plan: Plan) -> uuid.UUID:
        run_id: uuid.UUID = await self._pool.fetchval(
            _EXISTING_RUN.sql,
            *_EXISTING_RUN.args(
                {"tenant": plan.tenant, "plan_id": plan.plan_id, "version": plan.version}
            ),
        )
        return run_id

    async def create_run(
        self,
        plan: Plan,
        decisions: list[PolicyDecision],
        *,
        created_by: str,
        trace_id: str | None = None,
    ) -> tuple[uuid.UUID, bool]:
        """Create the run of a plan version, once: (run id, True) or the existing (id, False).

        Run creation is idempotent on (tenant, plan_id, version) (DESIGN §5).
        """
        run_id = uuid.uuid4()
        steps = [
            {"step_id": s.id, "status": "blocked" if s.depends_on else "ready"} for s in plan.steps
        ]
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
            "event": json.dumps(
                {
                    "plan_id": str(plan.plan_id),
                    "version": plan.version,
                    "content_hash": plan.content_hash,
                    "catalog_version": plan.catalog_version,
                    "policy_version": plan.policy_version,
                    "created_by": created_by,
                }
            ),
            "trace_id": trace_id,
        }
        row = await self._pool.fetchrow(_CREATE_RUN.sql, *_CREATE_RUN.args(params))
        if row["created"] is not None:
            return row["created"], True
        return await self._existing(plan), False

    async def create_refused_run(
        self, plan: Plan, decisions: list[PolicyDecision], code: str, message: str
    ) -> tuple[uuid.UUID, bool]:
        """Record a dispatched plan that failed admission as a failed run with the reason."""
        error = {"code": code, "message": message}
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
        }
        row = await self._pool.fetchrow(_CREATE_REFUSED_RUN.sql, *_CREATE_REFUSED_RUN.args(params))
        if row["created"] is not None:
            return row["created"], True
        return await self._existing(plan), False

    async def claim_runs(self, worker: str, *, limit: int, ttl_s: float) -> list[ClaimedRun]:
        """Lease up to ``limit`` runnable runs to ``worker`` (``FOR UPDATE SKIP LOCKED``)."""
        rows = await self._pool.fetch(
            _CLAIM_RUNS.sql,
            *_CLAIM_RUNS.args({"worker": worker, "limit": limit, "ttl_s": ttl_s}),
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
            )
            for row in rows
        ]

    async def commit(
        self, run_id: uuid.UUID, token: uuid.UUID, worker: str, batch: Batch
    ) -> CommitResult:
        """Write a batch in one statement, fenced by the lease token."""
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
            "steps": json.dumps([row.as_json() for row in batch.steps.values()]),
            "attempts": json.dumps(
                [
                    {
                        "step_id": a.step_id,
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
        row = await self._pool.fetchrow(_COMMIT.sql, *_COMMIT.args(params))
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
