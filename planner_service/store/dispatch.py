"""The dispatch queue (``planner.dispatch``): ready plans waiting for an executor (DESIGN §5).

Executors claim with ``FOR UPDATE SKIP LOCKED`` and a lease; a claim whose lease expires
before its ack is handed out again. Run creation on the executor is idempotent on
(plan_id, version), so a redelivered claim still makes one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared_schemas import Plan, PolicyDecision

_CLAIM = """
WITH picked AS (
    SELECT tenant, plan_id, version FROM planner.dispatch
    WHERE status = 'queued' AND (lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY enqueued_at
    LIMIT :max
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE planner.dispatch d
    SET lease_owner = :worker, lease_expires_at = now() + make_interval(secs => :lease_s),
        claims = d.claims + 1
    FROM picked
    WHERE d.tenant = picked.tenant AND d.plan_id = picked.plan_id
      AND d.version = picked.version
    RETURNING d.dispatch_id, d.tenant, d.plan_id, d.version, d.claims
)
SELECT c.dispatch_id, c.claims, v.body, v.policy_decisions
FROM claimed c JOIN planner.plan_versions v
  ON v.tenant = c.tenant AND v.plan_id = c.plan_id AND v.version = c.version
"""


@dataclass(frozen=True)
class Claim:
    """A claimed queue entry with the signed plan to run."""

    dispatch_id: UUID
    claims: int
    plan: Plan
    policy_decisions: list[PolicyDecision]


class DispatchStore:
    """Claims and acknowledges queue entries; each method is one statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def claim(self, worker: str, *, max_items: int, lease_s: float) -> list[Claim]:
        """Lease up to ``max_items`` queued plans to ``worker`` for ``lease_s`` seconds."""
        async with self._auto.connect() as conn:
            rows = (
                await conn.execute(
                    text(_CLAIM), {"worker": worker, "max": max_items, "lease_s": lease_s}
                )
            ).all()
        return [
            Claim(
                dispatch_id=row.dispatch_id,
                claims=row.claims,
                plan=Plan.model_validate(row.body),
                policy_decisions=[PolicyDecision.model_validate(d) for d in row.policy_decisions],
            )
            for row in rows
        ]

    async def ack(self, dispatch_id: UUID, worker: str, run_id: UUID) -> bool:
        """Mark a claimed entry done; False when ``worker`` does not hold its lease."""
        async with self._auto.connect() as conn:
            result = await conn.execute(
                text(
                    "UPDATE planner.dispatch SET status = 'acked', acked_at = now(),"
                    " run_id = :run_id WHERE dispatch_id = :id AND lease_owner = :worker"
                    " AND status = 'queued'"
                ),
                {"id": dispatch_id, "worker": worker, "run_id": run_id},
            )
        return bool(result.rowcount)

    async def plan_for(
        self, tenant: str, plan_id: UUID, version: int
    ) -> tuple[Plan, list[PolicyDecision], str] | None:
        """A stored plan version with its policy decisions and status, for an executor."""
        async with self._auto.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT body, policy_decisions, status FROM planner.plan_versions"
                        " WHERE tenant = :tenant AND plan_id = :plan_id AND version = :version"
                    ),
                    {"tenant": tenant, "plan_id": plan_id, "version": version},
                )
            ).first()
        if row is None:
            return None
        decisions = [PolicyDecision.model_validate(d) for d in row.policy_decisions]
        return Plan.model_validate(row.body), decisions, row.status
