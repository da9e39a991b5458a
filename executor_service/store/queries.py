"""Reads and operator writes behind the runs API; every query filters on ``tenant``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from . import sql


@dataclass(frozen=True)
class ApprovalOutcome:
    """What recording an approval did."""

    gated: bool
    """The step was waiting at its gate."""
    recorded: bool
    """This call recorded the decision (False: an earlier decision stands)."""
    existing: dict[str, Any] | None
    """The decision on record, when one exists."""
    gate: dict[str, Any] | None = None
    """Without a decision on record: the step's ``status``, ``args_hash``, ``gate_deadline``
    and ``expired``, to say why nothing was recorded (None: no such step)."""


def _cursor(created_at: datetime, run_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(run_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
        return datetime.fromisoformat(created_at), UUID(run_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


class RunQueries:
    """Tenant-scoped reads of runs and the operator actions that do not need a lease."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def get_run(self, tenant: str, run_id: UUID) -> dict[str, Any] | None:
        """A run with its steps and attempts, or None."""
        async with self._auto.connect() as conn:
            run = (
                await conn.execute(
                    text(
                        "SELECT run_id, plan_id, plan_version, content_hash, catalog_version,"
                        " policy_version, status, created_by, created_at, updated_at,"
                        " finished_at, error, cancel_requested, lease_owner, plan,"
                        " policy_decisions, traceparent, mode, parent_run_id, fork_from_step,"
                        " budget_usd, spent_usd, replans, recovery_attempts, key_scope"
                        " FROM executor.runs WHERE tenant = :tenant AND run_id = :run_id"
                    ),
                    {"tenant": tenant, "run_id": run_id},
                )
            ).first()
            if run is None:
                return None
            steps = (
                await conn.execute(
                    text(
                        "SELECT step_id, status, attempts, resolved_args, output, error,"
                        " next_attempt_at, first_started_at, finished_at, args_hash,"
                        " gate_deadline"
                        " FROM executor.steps WHERE run_id = :run_id"
                    ),
                    {"run_id": run_id},
                )
            ).all()
            attempts = (
                await conn.execute(
                    text(
                        "SELECT step_id, kind, attempt, idempotency_key, status, started_at,"
                        " finished_at, duration_s, error, worker FROM executor.attempts"
                        " WHERE run_id = :run_id ORDER BY started_at, step_id, kind, attempt"
                    ),
                    {"run_id": run_id},
                )
            ).all()
            approvals = (
                await conn.execute(
                    text(
                        "SELECT step_id, decision, decided_by, comment, decided_at, args_hash"
                        " FROM executor.approvals WHERE run_id = :run_id"
                    ),
                    {"run_id": run_id},
                )
            ).all()
        order = {s["id"]: i for i, s in enumerate(run.plan["steps"])}
        return {
            **dict(run._mapping),
            "steps": sorted(
                (dict(s._mapping) for s in steps), key=lambda s: order.get(s["step_id"], 0)
            ),
            "attempts": [dict(a._mapping) for a in attempts],
            "approvals": [dict(a._mapping) for a in approvals],
        }

    async def list_runs(
        self,
        tenant: str,
        *,
        status: str | None,
        plan_id: UUID | None,
        limit: int,
        cursor: str | None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        with_intent: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Runs of ``tenant``, newest first, and the next page's cursor.

        ``created_from`` (inclusive) and ``created_to`` (exclusive) bound the creation time;
        ``with_intent`` adds each run's plan intent (the console's list shows it).

        Raises:
            ValueError: for a cursor this service did not produce.
        """
        intent = ", plan->>'intent' AS intent" if with_intent else ""
        query = (
            "SELECT run_id, plan_id, plan_version, status, created_by, created_at, updated_at,"
            f" finished_at, mode, parent_run_id{intent} FROM executor.runs"
            " WHERE tenant = :tenant"
            " AND (CAST(:status AS text) IS NULL OR status = :status)"
            " AND (CAST(:plan_id AS uuid) IS NULL OR plan_id = :plan_id)"
            " AND (CAST(:created_from AS timestamptz) IS NULL OR created_at >= :created_from)"
            " AND (CAST(:created_to AS timestamptz) IS NULL OR created_at < :created_to)"
        )
        params: dict[str, Any] = {
            "tenant": tenant,
            "status": status,
            "plan_id": plan_id,
            "created_from": created_from,
            "created_to": created_to,
            "limit": limit + 1,
        }
        if cursor:
            at, after = _decode(cursor)
            query += " AND (created_at, run_id) < (:at, :after)"
            params |= {"at": at, "after": after}
        query += " ORDER BY created_at DESC, run_id DESC LIMIT :limit"
        async with self._auto.connect() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(text(query), params)).all()]
        page = rows[:limit]
        more = len(rows) > limit
        return page, (_cursor(page[-1]["created_at"], page[-1]["run_id"]) if more else None)

    async def events(
        self, tenant: str, run_id: UUID, after_seq: int, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Events of a run after ``after_seq``, in order."""
        async with self._auto.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT run_id, seq, type, step_id, attempt, payload, trace_id, at"
                        " FROM executor.run_events WHERE tenant = :tenant AND run_id = :run_id"
                        " AND seq > :after ORDER BY seq LIMIT :limit"
                    ),
                    {"tenant": tenant, "run_id": run_id, "after": after_seq, "limit": limit},
                )
            ).all()
        return [dict(r._mapping) for r in rows]

    async def run_status(self, tenant: str, run_id: UUID) -> str | None:
        """A run's status, or None when the tenant has no such run."""
        async with self._auto.connect() as conn:
            value = await conn.scalar(
                text("SELECT status FROM executor.runs WHERE tenant = :tenant AND run_id = :id"),
                {"tenant": tenant, "id": run_id},
            )
        return None if value is None else str(value)

    async def cancel(self, tenant: str, run_id: UUID) -> str | None:
        """Cancel a run: at once when no worker holds it, else by request to its driver.

        Returns the resulting status (``cancelled`` or the current one while the driver
        winds down), or None when the tenant has no such run.
        """
        async with self._auto.connect() as conn:
            row = (
                await conn.execute(text(sql.CANCEL_IDLE), {"tenant": tenant, "run_id": run_id})
            ).one()
            if row.cancelled:
                return "cancelled"
            status = await conn.scalar(
                text(sql.REQUEST_CANCEL), {"tenant": tenant, "run_id": run_id}
            )
        if status is None:
            return await self.run_status(tenant, run_id)
        return str(status)

    async def record_approval(
        self,
        tenant: str,
        run_id: UUID,
        step_id: str,
        *,
        decision: str,
        by: str,
        comment: str | None,
        args_hash: str | None = None,
    ) -> ApprovalOutcome:
        """Record an approver's decision once; a paused run is handed back to the workers."""
        async with self._auto.connect() as conn:
            row = (
                await conn.execute(
                    text(sql.RECORD_APPROVAL),
                    {
                        "tenant": tenant,
                        "run_id": run_id,
                        "step_id": step_id,
                        "decision": decision,
                        "by": by,
                        "comment": comment,
                        "args_hash": args_hash,
                    },
                )
            ).one()
            existing = (
                await conn.execute(
                    text(
                        "SELECT decision, decided_by, comment, decided_at, args_hash"
                        " FROM executor.approvals"
                        " WHERE tenant = :tenant AND run_id = :run_id AND step_id = :step_id"
                    ),
                    {"tenant": tenant, "run_id": run_id, "step_id": step_id},
                )
            ).first()
            gate = None
            if existing is None:
                gate = (
                    await conn.execute(
                        text(
                            "SELECT s.status, s.args_hash, s.gate_deadline,"
                            " s.gate_deadline <= now() AS expired FROM executor.steps s"
                            " JOIN executor.runs r ON r.run_id = s.run_id"
                            " WHERE r.tenant = :tenant AND s.run_id = :run_id"
                            " AND s.step_id = :step_id"
                        ),
                        {"tenant": tenant, "run_id": run_id, "step_id": step_id},
                    )
                ).first()
        return ApprovalOutcome(
            gated=bool(row.gated),
            recorded=bool(row.recorded),
            existing=None if existing is None else dict(existing._mapping),
            gate=None if gate is None else dict(gate._mapping),
        )
