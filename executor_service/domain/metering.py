"""Cumulative limits on a metered argument, checked before each call (RELIABILITY S6).

A tool whose ``ToolSpec.meter`` names a numeric argument (e.g. ``bank.transfer``'s ``amount``
in USD) may declare a ``run_limit`` and a ``tenant_daily_limit`` on the running total of that
argument. The planner's policy judges the plan's literal values (``planner_service.domain.
policy``); here the executor adds up the values the calls were really made with, after ``$ref``
resolution, so neither references, replans, retries nor splitting a payment across runs get
around a limit.

The ledger is the run events, so no table of its own is needed: the driver records every
metered call in its ``step.started`` event *before* the call (a metered step's start is always
committed first, idempotent tool or not), as ``payload.metered = {tool, arg, unit, amount}``
with ``amount`` the absolute value as a decimal string. A total is the sum over those events,
counting each ``(run, step, idempotency key)`` once, so a retried attempt of the same call is
not counted twice, while a replanned step with other arguments is a new call and is. Events
are never removed by a replan, so a run's total covers every version it ran. Calls count
whether they succeeded, failed or were compensated: an amount that was sent may have moved.

* per run: every metered ``step.started`` of the run;
* per tenant per day: those of the tenant's runs recorded since 00:00 UTC (database clock).

Concurrent runs of one tenant are serialised on a Postgres advisory lock per (tenant, tool)
held from the check until the ``step.started`` row is committed (``MeterLock``), so two
workers cannot both pass a check that only one of them fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uuid

    import asyncpg

    from shared_schemas import ToolMeter

METERED_TOTALS_SQL = """
WITH bounds AS (
    SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day_start
), counted AS (
    SELECT DISTINCT ON (e.run_id, e.step_id, e.payload ->> 'idempotency_key')
        e.run_id, e.at, CAST(e.payload #>> '{metered,amount}' AS numeric) AS amount
    FROM bounds, executor.runs r
    JOIN executor.run_events e ON e.run_id = r.run_id
    WHERE r.tenant = $1 AND e.tenant = $1
      AND (r.run_id = $2 OR r.updated_at >= bounds.day_start)
      AND e.type = 'step.started'
      AND e.payload #>> '{metered,tool}' = $3
      AND e.payload #>> '{metered,arg}' = $4
      AND NOT (e.run_id = $2 AND e.step_id = $5
               AND e.payload ->> 'idempotency_key' IS NOT DISTINCT FROM $6)
)
SELECT coalesce(sum(amount) FILTER (WHERE run_id = $2), 0) AS run_total,
       coalesce(sum(amount) FILTER (WHERE at >= bounds.day_start), 0) AS tenant_total
FROM bounds LEFT JOIN counted ON true
"""
"""Totals so far, without the call being checked: ``$1`` tenant, ``$2`` run id, ``$3`` tool,
``$4`` metered argument, ``$5`` step id and ``$6`` idempotency key of the call checked (its
earlier attempts are the same call)."""


@dataclass(frozen=True)
class MeteredTotals:
    """What was already counted before a call, in the meter's unit."""

    run_total: Decimal
    """The run's metered calls of the tool, all plan versions."""
    tenant_total: Decimal
    """The tenant's metered calls of the tool today (UTC), all runs."""


def metered_event(meter: ToolMeter, tool: str, amount: Decimal) -> dict[str, Any]:
    """The ``metered`` entry of a ``step.started`` payload: ``{tool, arg, unit, amount}``."""
    return {"tool": tool, "arg": meter.arg, "unit": meter.unit, "amount": _plain(amount)}


def _plain(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros: ``10000``, ``1500.5``."""
    return format(value.normalize(), "f")


def over_meter(
    meter: ToolMeter, tool: str, amount: Decimal | None, totals: MeteredTotals
) -> dict[str, Any] | None:
    """The ``run.meter_exceeded`` payload if a call may not be made, else None.

    Args:
        meter: The tool's meter.
        tool: The tool's catalog name.
        amount: What the call adds (``ToolMeter.amount`` of the resolved args); None when the
            resolved value is not a number, which stops the run (``scope: "value"``): what
            cannot be counted cannot be capped.
        totals: What was counted before the call.

    Returns:
        ``{"scope": "value" | "run" | "tenant", "tool", "arg", "unit", "limit", "total",
        "amount"}`` (numbers as decimal strings, ``total`` before the call) for the first cap
        the call would exceed, the run's first; None when the call fits.
    """
    base = {"tool": tool, "arg": meter.arg, "unit": meter.unit}
    if amount is None:
        return {
            "scope": "value",
            **base,
            "message": f"argument {meter.arg!r} is not a number, so it cannot be metered",
        }
    checks = (
        ("run", totals.run_total, meter.run_limit),
        ("tenant", totals.tenant_total, meter.tenant_daily_limit),
    )
    for scope, total, limit in checks:
        if limit is not None and total + amount > Decimal(str(limit)):
            return {
                "scope": scope,
                **base,
                "limit": _plain(Decimal(str(limit))),
                "total": _plain(total),
                "amount": _plain(amount),
            }
    return None


async def metered_totals(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant: str,
    run_id: uuid.UUID,
    tool: str,
    meter: ToolMeter,
    step_id: str,
    idempotency_key: str,
) -> MeteredTotals:
    """Read the run's and the tenant's totals from the run events (one statement)."""
    row = await conn.fetchrow(
        METERED_TOTALS_SQL, tenant, run_id, tool, meter.arg, step_id, idempotency_key
    )
    assert row is not None  # an aggregate always answers one row
    return MeteredTotals(Decimal(row["run_total"]), Decimal(row["tenant_total"]))


class MeterLock:
    """A session advisory lock per (tenant, tool), held from a check to the start's commit.

    ``acquire`` takes a connection of the pool and blocks until no other holder of the same
    (tenant, tool) remains; ``release`` unlocks and returns the connection. Reads made while
    holding it (``connection``) see every start committed by the previous holder.
    """

    def __init__(self, pool: asyncpg.Pool, tenant: str, tool: str) -> None:
        self._pool = pool
        self._key = f"planexec.meter/{tenant}/{tool}"
        self.connection: asyncpg.Connection | None = None

    async def acquire(self) -> asyncpg.Connection:
        """Take the lock; returns the connection that holds it."""
        conn: asyncpg.Connection = await self._pool.acquire()
        try:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", self._key)
        except BaseException:
            await self._pool.release(conn)
            raise
        self.connection = conn
        return conn

    async def release(self) -> None:
        """Unlock (idempotent); the lock also ends with its session if this process dies."""
        conn, self.connection = self.connection, None
        if conn is None:
            return
        try:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", self._key)
        finally:
            await self._pool.release(conn)


@dataclass
class MeterVerdict:
    """The outcome of ``check_call``."""

    stop: dict[str, Any] | None
    """The ``run.meter_exceeded`` payload (``over_meter``) when the call may not be made."""
    event: dict[str, Any] | None
    """When it may: the ``metered`` entry its ``step.started`` event must carry."""
    lock: MeterLock | None
    """Held when the call may be made and the tool has a tenant cap: release it once the
    ``step.started`` event is committed (or on any failure before)."""


async def check_call(
    pool: asyncpg.Pool,
    *,
    tenant: str,
    run_id: uuid.UUID,
    tool: str,
    meter: ToolMeter,
    step_id: str,
    idempotency_key: str,
    args: dict[str, Any],
) -> MeterVerdict:
    """Check one call of a metered tool against its run and tenant caps, before it is made.

    With a ``tenant_daily_limit`` the totals are read under the (tenant, tool) ``MeterLock``,
    which the caller holds on until the start is committed when the call may go ahead.
    """
    lock = MeterLock(pool, tenant, tool) if meter.tenant_daily_limit is not None else None
    try:
        conn = await lock.acquire() if lock is not None else pool
        totals = await metered_totals(
            conn,
            tenant=tenant,
            run_id=run_id,
            tool=tool,
            meter=meter,
            step_id=step_id,
            idempotency_key=idempotency_key,
        )
        amount = meter.amount(args)
        stop = over_meter(meter, tool, amount, totals)
    except BaseException:
        if lock is not None:
            await lock.release()
        raise
    if stop is not None or amount is None:
        if lock is not None:
            await lock.release()
        return MeterVerdict(stop, None, None)
    return MeterVerdict(None, metered_event(meter, tool, amount), lock)
