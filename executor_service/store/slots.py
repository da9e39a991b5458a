"""Statements of the tool concurrency slots (table ``executor.tool_slots``, migration 0004).

A slot row names the run lease it belongs to and counts only while that lease is live on the
database clock, so slots of a dead worker expire with its leases and never sooner. Each call
is one autocommit statement: nothing is held between calls, and waiting costs no connection.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from planexec.db.pg import named

_ACQUIRE = named(
    "SELECT granted, held, queued FROM executor.acquire_tool_slot(:tool, :holder, :tenant,"
    " :run_id, :step_id, :lease_token, CAST(:cap AS integer), CAST(:tenant_cap AS integer))"
)
_RELEASE = named(
    "SELECT executor.release_tool_slot(:tool, :holder, CAST(:cap AS integer),"
    " CAST(:tenant_cap AS integer)) AS released"
)
_HELD = named(
    "SELECT count(*) FILTER (WHERE s.granted_at IS NOT NULL) AS held,"
    " count(*) FILTER (WHERE s.granted_at IS NULL) AS queued"
    " FROM executor.tool_slots s JOIN executor.runs r"
    " ON r.run_id = s.run_id AND r.lease_token = s.lease_token AND r.lease_expires_at > now()"
    " WHERE s.tool = :tool"
)


@dataclass(frozen=True)
class SlotState:
    """What an acquire found."""

    granted: bool
    """The holder has a slot now."""
    held: int
    """Slots of the tool held after the call (all tenants)."""
    queued: int
    """Holders of the tool still waiting after the call."""


@dataclass(frozen=True)
class SlotRequest:
    """Who asks for a slot of which tool, under which caps."""

    tool: str
    holder: uuid.UUID
    """One id per acquisition (a retry of the step acquires anew)."""
    tenant: str
    run_id: uuid.UUID
    step_id: str
    lease_token: uuid.UUID
    """The run lease the slot lives and dies with."""
    cap: int | None
    """Slots of the tool across all tenants; None: no tool-wide cap."""
    tenant_cap: int | None
    """Slots of the tool per tenant; None: no per-tenant cap."""


class SlotStore:
    """The slot statements on an asyncpg pool (``planexec.db.pg.create_pool``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def acquire(self, request: SlotRequest) -> SlotState:
        """Queue ``request.holder`` (idempotent: it keeps its ticket) and grant what fits.

        Waiters are granted first come, first served (ticket order), skipping those whose
        tenant is at its cap. A holder whose run lease is no longer live is not queued
        (``granted`` False, and it never will be).
        """
        row = await self._pool.fetchrow(
            _ACQUIRE.sql,
            *_ACQUIRE.args(
                {
                    "tool": request.tool,
                    "holder": request.holder,
                    "tenant": request.tenant,
                    "run_id": request.run_id,
                    "step_id": request.step_id,
                    "lease_token": request.lease_token,
                    "cap": request.cap,
                    "tenant_cap": request.tenant_cap,
                }
            ),
        )
        return SlotState(bool(row["granted"]), int(row["held"]), int(row["queued"]))

    async def release(self, request: SlotRequest) -> bool:
        """Give the slot (or the place in the queue) back and grant the next waiters.

        Returns:
            False when the holder had no row any more (its lease had lapsed).
        """
        params = {
            "tool": request.tool,
            "holder": request.holder,
            "cap": request.cap,
            "tenant_cap": request.tenant_cap,
        }
        return bool(await self._pool.fetchval(_RELEASE.sql, *_RELEASE.args(params)))

    async def live(self, tool: str) -> tuple[int, int]:
        """(slots held, holders waiting) of ``tool`` under live leases (for operators, tests)."""
        row = await self._pool.fetchrow(_HELD.sql, *_HELD.args({"tool": tool}))
        return int(row["held"]), int(row["queued"])
