"""Reads the console needs beyond ``RunQueries``; every query filters on ``tenant``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..store.queries import RunQueries

RUN_STATUSES = (
    "pending",
    "running",
    "paused",
    "needs_attention",
    "dead_letter",
    "succeeded",
    "failed",
    "cancelled",
)
"""Every run status, in the order the filter lists them."""


@dataclass(frozen=True)
class RunFilter:
    """The runs screen's filters; None means any."""

    status: str | None = None
    plan_id: UUID | None = None
    created_from: datetime | None = None
    """Runs created at or after this instant."""
    created_to: datetime | None = None
    """Runs created before this instant."""


_GATES = (
    "SELECT s.run_id, s.step_id, s.resolved_args, s.args_hash, s.gate_deadline,"
    " coalesce(s.gate_deadline <= now(), false) AS expired, r.plan_id, r.plan_version,"
    " r.created_by, r.created_at AS run_created_at, r.plan->>'intent' AS intent,"
    " (SELECT x FROM jsonb_array_elements(r.plan->'steps') x"
    "   WHERE x->>'id' = s.step_id LIMIT 1) AS step,"
    " (SELECT d FROM jsonb_array_elements(r.policy_decisions) d"
    "   WHERE d->>'step_id' = s.step_id LIMIT 1) AS decision"
    " FROM executor.steps s JOIN executor.runs r"
    " ON r.tenant = s.tenant AND r.run_id = s.run_id"
    " WHERE s.tenant = :tenant AND r.tenant = :tenant AND s.status = 'awaiting_approval'"
    # A decision is recorded at once but applied by the run's driver a moment later: a gate
    # with a decision on record for these arguments waits for nobody.
    " AND NOT EXISTS (SELECT 1 FROM executor.approvals a WHERE a.tenant = s.tenant"
    "   AND a.run_id = s.run_id AND a.step_id = s.step_id"
    "   AND (a.args_hash IS NULL OR a.args_hash = s.args_hash))"
    " ORDER BY s.gate_deadline ASC NULLS LAST, r.created_at, s.step_id LIMIT :limit"
)


class ConsoleQueries:
    """Tenant-scoped reads of the runs screen, the approvals inbox and a run's event tail."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._runs = RunQueries(engine)

    async def list_runs(
        self, tenant: str, filters: RunFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Runs of ``tenant`` matching ``filters`` with their intent (``RunQueries.list_runs``).

        Raises:
            ValueError: for a cursor this service did not produce.
        """
        return await self._runs.list_runs(
            tenant,
            status=filters.status,
            plan_id=filters.plan_id,
            created_from=filters.created_from,
            created_to=filters.created_to,
            limit=limit,
            cursor=cursor,
            with_intent=True,
        )

    async def open_gates(self, tenant: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """Undecided approval gates of ``tenant``, soonest deadline first.

        Each row: ``run_id, step_id, resolved_args, args_hash, gate_deadline, expired,
        plan_id, plan_version, created_by, run_created_at, intent, step`` (the plan's step)
        and ``decision`` (its policy decision, with ``rule_ids``).
        """
        async with self._auto.connect() as conn:
            rows = (await conn.execute(text(_GATES), {"tenant": tenant, "limit": limit})).all()
        return [dict(r._mapping) for r in rows]

    async def recent_events(
        self, tenant: str, run_id: UUID, *, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The last ``limit`` events of a run, oldest first.

        Each row: ``seq, type, step_id, attempt, payload, trace_id, at``.
        """
        async with self._auto.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT seq, type, step_id, attempt, payload, trace_id, at"
                        " FROM executor.run_events WHERE tenant = :tenant AND run_id = :run_id"
                        " ORDER BY seq DESC LIMIT :limit"
                    ),
                    {"tenant": tenant, "run_id": run_id, "limit": limit},
                )
            ).all()
        return [dict(r._mapping) for r in reversed(rows)]
