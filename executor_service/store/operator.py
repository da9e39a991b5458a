"""Operator actions on runs no worker holds: resolve a step, resume a dead letter.

Each action is one transaction that checks the run's state under ``FOR UPDATE``, changes
it, appends its run event and wakes the workers (``NOTIFY planexec_runs``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain.states import LEGAL_STEP_TRANSITIONS, StepStatus
from . import sql

# What resolving a step in needs_attention makes of it, by the kind of its open attempt.
_RESOLVED = {
    ("action", "mark_succeeded"): StepStatus.SUCCEEDED,
    ("action", "retry"): StepStatus.READY,
    ("action", "fail"): StepStatus.FAILED,
    ("compensation", "mark_succeeded"): StepStatus.COMPENSATED,
    ("compensation", "retry"): StepStatus.COMPENSATING,
    ("compensation", "fail"): StepStatus.FAILED,
}


@dataclass(frozen=True)
class ActionRefused:
    """The action does not apply to the run as it is now (a 409)."""

    reason: str


class OperatorActions:
    """Tenant-scoped operator writes (SQLAlchemy, one transaction each)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def resolve_step(
        self,
        tenant: str,
        run_id: UUID,
        step_id: str,
        *,
        action: str,
        output: Any,
        by: str,
        comment: str | None,
    ) -> StepStatus | ActionRefused | None:
        """Decide a step whose outcome is unknown; the run goes back to the workers.

        Returns:
            The step's new status; ``ActionRefused`` when the run or step is not in
            ``needs_attention`` (or a worker holds the run); None when the tenant has no
            such run or the run no such step.
        """
        async with self._engine.begin() as conn:
            run = (
                await conn.execute(
                    text(
                        "SELECT status, lease_token FROM executor.runs"
                        " WHERE tenant = :tenant AND run_id = :run_id FOR UPDATE"
                    ),
                    {"tenant": tenant, "run_id": run_id},
                )
            ).first()
            if run is None:
                return None
            step = (
                await conn.execute(
                    text(
                        "SELECT status FROM executor.steps WHERE run_id = :run_id"
                        " AND step_id = :step_id FOR UPDATE"
                    ),
                    {"run_id": run_id, "step_id": step_id},
                )
            ).first()
            if step is None:
                return None
            if run.status != "needs_attention" or run.lease_token is not None:
                return ActionRefused(f"the run is {run.status}, not needs_attention")
            if step.status != StepStatus.NEEDS_ATTENTION:
                return ActionRefused(f"step {step_id!r} is {step.status}, not needs_attention")
            open_attempt = (
                await conn.execute(
                    text(
                        "SELECT kind, attempt FROM executor.attempts WHERE run_id = :run_id"
                        " AND step_id = :step_id AND status = 'started'"
                        " ORDER BY (kind = 'compensation') DESC, attempt DESC LIMIT 1"
                    ),
                    {"run_id": run_id, "step_id": step_id},
                )
            ).first()
            kind = open_attempt.kind if open_attempt is not None else "action"
            after = _RESOLVED[(kind, action)]
            assert (StepStatus.NEEDS_ATTENTION, after) in LEGAL_STEP_TRANSITIONS
            resolution = {"action": action, "kind": kind, "by": by, "comment": comment}
            error = None
            if after is StepStatus.FAILED:
                code = "compensation_abandoned" if kind == "compensation" else "operator_failed"
                error = {"code": code, "message": comment or "failed by an operator"}
            await conn.execute(
                text(
                    "UPDATE executor.steps SET status = :status, error = CAST(:error AS jsonb),"
                    " output = CASE WHEN :set_output THEN CAST(:output AS jsonb) ELSE output END,"
                    " finished_at = now() WHERE run_id = :run_id AND step_id = :step_id"
                ),
                {
                    "status": after.value,
                    "error": None if error is None else json.dumps(error),
                    "set_output": kind == "action" and action == "mark_succeeded",
                    "output": json.dumps(output),
                    "run_id": run_id,
                    "step_id": step_id,
                },
            )
            if open_attempt is not None:
                await conn.execute(
                    text(
                        "UPDATE executor.attempts SET status = :status, finished_at = now(),"
                        " error = CAST(:error AS jsonb) WHERE run_id = :run_id"
                        " AND step_id = :step_id AND kind = :kind AND attempt = :attempt"
                    ),
                    {
                        "status": "succeeded" if action == "mark_succeeded" else "failed",
                        "error": json.dumps({"code": "operator_resolved", **resolution}),
                        "run_id": run_id,
                        "step_id": step_id,
                        "kind": kind,
                        "attempt": open_attempt.attempt,
                    },
                )
            await conn.execute(
                text(
                    "WITH run AS (UPDATE executor.runs SET status = 'pending', wake_at = NULL,"
                    " next_seq = next_seq + 1, updated_at = now() WHERE run_id = :run_id"
                    " RETURNING tenant, next_seq - 1 AS seq)"
                    " INSERT INTO executor.run_events (tenant, run_id, seq, type, step_id,"
                    " payload) SELECT tenant, :run_id, seq, 'step.resolved', :step_id,"
                    " CAST(:payload AS jsonb) FROM run"
                ),
                {
                    "run_id": run_id,
                    "step_id": step_id,
                    "payload": json.dumps({**resolution, "status": after.value}),
                },
            )
            await conn.execute(text("SELECT pg_notify('planexec_runs', '')"))
        return after

    async def resume(self, tenant: str, run_id: UUID, by: str) -> bool:
        """Hand a dead-lettered run back to the workers; False when it is not dead-lettered."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(text(sql.RESUME), {"tenant": tenant, "run_id": run_id, "by": by})
            ).one()
        return bool(row.resumed)
