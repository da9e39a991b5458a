"""Retention: prune old run events and plan provenance in short batches.

What is pruned:

- ``executor.run_events`` of *finished* runs (``succeeded``, ``failed``, ``cancelled``) whose
  ``finished_at`` is older than the cutoff. These statuses are terminal: a retry, fork or
  replay is a new run, so a finished run never gets another event. Events of any other run
  (``pending``, ``running``, ``paused``, ``needs_attention``, ``dead_letter``) are never
  touched: they are its live history, which the SSE stream and the history checker read as a
  gap-free ``seq`` sequence.
- ``planner.generation_attempts`` (the provenance of a plan version: prompt, raw response,
  tokens, latency) of plan versions created before the cutoff.
- ``planner.dispatch`` entries *acked* before the cutoff: the executor made its run, which
  records the plan version itself. A queued entry is never touched, whatever its age. A
  version is enqueued only when it is created, so a pruned entry is never enqueued again.
- ``planner.idempotency_keys`` recorded before the cutoff: a request repeated with such a key
  after the retention age makes a new plan, as with a key never seen (Stripe keeps keys for
  24 hours; keep the retention age above the longest client retry window).
- ``planner.plan_cache`` entries that have expired (``expires_at`` before ``now()``), whatever
  the retention age: lookups already ignore them.

What stays, as the summary: the run's row (status, error, spend, ``finished_at``), its steps
(resolved arguments, outputs, errors, approvals), its attempts (one small row per call: status,
duration, worker, idempotency key; the console's attempts timeline and the numbering of
compensation attempts read them), the approvals, and every plan and plan version (body,
validation report, policy decisions, signature).

Each batch deletes at most ``batch`` rows in its own transaction, so row locks and WAL bursts
stay short while services keep running. Batches walk the table's primary key upwards
(keyset), so one prune reads each candidate row once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

FINISHED_RUN_STATUSES = ("succeeded", "failed", "cancelled")
"""Run statuses after which a run gets no more events; only their events are pruned."""

_PRUNE_RUN_EVENTS = text(
    """
    WITH doomed AS (
        SELECT e.run_id, e.seq
        FROM executor.run_events e
        JOIN executor.runs r ON r.run_id = e.run_id
        WHERE (e.run_id, e.seq) > (:after_run, :after_seq)
          AND r.status IN ('succeeded', 'failed', 'cancelled')
          AND r.finished_at < :cutoff
        ORDER BY e.run_id, e.seq
        LIMIT :batch
    )
    , deleted AS (
        DELETE FROM executor.run_events e
        USING doomed d
        WHERE e.run_id = d.run_id AND e.seq = d.seq
        RETURNING e.run_id, e.seq
    )
    SELECT count(*) OVER () AS deleted, run_id, seq
    FROM deleted ORDER BY run_id DESC, seq DESC LIMIT 1
    """
)

_PRUNE_GENERATION_ATTEMPTS = text(
    """
    WITH doomed AS (
        SELECT g.tenant, g.plan_id, g.version, g.attempt
        FROM planner.generation_attempts g
        JOIN planner.plan_versions v
          ON v.tenant = g.tenant AND v.plan_id = g.plan_id AND v.version = g.version
        WHERE (g.tenant, g.plan_id, g.version, g.attempt)
              > (:after_tenant, :after_plan, :after_version, :after_attempt)
          AND v.created_at < :cutoff
        ORDER BY g.tenant, g.plan_id, g.version, g.attempt
        LIMIT :batch
    )
    , deleted AS (
        DELETE FROM planner.generation_attempts g
        USING doomed d
        WHERE g.tenant = d.tenant AND g.plan_id = d.plan_id AND g.version = d.version
          AND g.attempt = d.attempt
        RETURNING g.tenant, g.plan_id, g.version, g.attempt
    )
    SELECT count(*) OVER () AS deleted, tenant, plan_id, version, attempt
    FROM deleted ORDER BY tenant DESC, plan_id DESC, version DESC, attempt DESC LIMIT 1
    """
)


_PRUNE_DISPATCH = text(
    """
    WITH doomed AS (
        SELECT tenant, plan_id, version FROM planner.dispatch
        WHERE (tenant, plan_id, version) > (:after_tenant, :after_plan, :after_version)
          AND status = 'acked' AND acked_at < :cutoff
        ORDER BY tenant, plan_id, version
        LIMIT :batch
    )
    , deleted AS (
        DELETE FROM planner.dispatch q
        USING doomed d
        WHERE q.tenant = d.tenant AND q.plan_id = d.plan_id AND q.version = d.version
        RETURNING q.tenant, q.plan_id, q.version
    )
    SELECT count(*) OVER () AS deleted, tenant, plan_id, version
    FROM deleted ORDER BY tenant DESC, plan_id DESC, version DESC LIMIT 1
    """
)

_PRUNE_IDEMPOTENCY_KEYS = text(
    """
    WITH doomed AS (
        SELECT tenant, key FROM planner.idempotency_keys
        WHERE (tenant, key) > (:after_tenant, :after_key) AND created_at < :cutoff
        ORDER BY tenant, key
        LIMIT :batch
    )
    , deleted AS (
        DELETE FROM planner.idempotency_keys k
        USING doomed d
        WHERE k.tenant = d.tenant AND k.key = d.key
        RETURNING k.tenant, k.key
    )
    SELECT count(*) OVER () AS deleted, tenant, key
    FROM deleted ORDER BY tenant DESC, key DESC LIMIT 1
    """
)

_PRUNE_PLAN_CACHE = text(
    """
    WITH doomed AS (
        SELECT tenant, cache_key FROM planner.plan_cache
        WHERE (tenant, cache_key) > (:after_tenant, :after_key) AND expires_at < now()
        ORDER BY tenant, cache_key
        LIMIT :batch
    )
    , deleted AS (
        DELETE FROM planner.plan_cache c
        USING doomed d
        WHERE c.tenant = d.tenant AND c.cache_key = d.cache_key
        RETURNING c.tenant, c.cache_key
    )
    SELECT count(*) OVER () AS deleted, tenant, cache_key
    FROM deleted ORDER BY tenant DESC, cache_key DESC LIMIT 1
    """
)


@dataclass(frozen=True)
class TablePruned:
    """What a prune removed from one table."""

    rows: int
    """Rows deleted."""
    batches: int
    """Transactions that deleted at least one row (each at most ``batch`` rows)."""


@dataclass(frozen=True)
class PruneStats:
    """The outcome of one :func:`prune`."""

    cutoff: datetime
    """Data older than this instant (database clock, UTC) was pruned."""
    run_events: TablePruned
    """``executor.run_events`` of finished runs."""
    generation_attempts: TablePruned
    """``planner.generation_attempts`` (plan provenance)."""
    dispatch: TablePruned
    """``planner.dispatch`` entries acked before the cutoff."""
    idempotency_keys: TablePruned
    """``planner.idempotency_keys`` recorded before the cutoff."""
    plan_cache: TablePruned
    """Expired ``planner.plan_cache`` entries."""


async def _prune_table(
    engine: AsyncEngine,
    statement: Any,
    start: dict[str, Any],
    cutoff: datetime,
    batch: int,
) -> TablePruned:
    """Run ``statement`` batch after batch, one transaction each, until it deletes nothing.

    ``start`` holds the keyset parameters below every key. ``statement`` returns one row, the
    number deleted then the greatest key deleted (ordered by Postgres, so text keys follow the
    database's collation), or no row; the key becomes the next batch's ``start``.
    """
    after = dict(start)
    rows = batches = 0
    while True:
        async with engine.begin() as conn:
            last = (
                await conn.execute(statement, {**after, "cutoff": cutoff, "batch": batch})
            ).first()
        if last is None:
            return TablePruned(rows=rows, batches=batches)
        rows += last[0]
        batches += 1
        after = dict(zip(start, tuple(last)[1:], strict=True))


async def prune(engine: AsyncEngine, *, older_than: timedelta, batch: int = 1000) -> PruneStats:
    """Delete run events of finished runs, plan provenance and planner bookkeeping.

    Args:
        engine: an engine on the planexec database (both schemas).
        older_than: age measured back from the database's ``now()``: a finished run's
            events go when its ``finished_at`` is older, a plan version's generation
            attempts when its ``created_at`` is older, a dispatch entry when its
            ``acked_at`` is older, an idempotency key when its ``created_at`` is older.
            Expired plan cache entries go whatever this age.
        batch: most rows deleted per transaction (≥ 1).

    Returns:
        Rows deleted and transactions used, per table. A second prune with the same age
        right after deletes nothing.

    Raises:
        ValueError: when ``batch`` < 1 or ``older_than`` is negative.
        sqlalchemy.exc.DBAPIError: on a database error; batches committed before it stay
            deleted, and running the prune again continues where it stopped.

    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    async with engine.connect() as conn:
        now: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
    cutoff = now - older_than
    events = await _prune_table(
        engine,
        _PRUNE_RUN_EVENTS,
        {"after_run": uuid.UUID(int=0), "after_seq": 0},
        cutoff,
        batch,
    )
    provenance = await _prune_table(
        engine,
        _PRUNE_GENERATION_ATTEMPTS,
        {
            "after_tenant": "",
            "after_plan": uuid.UUID(int=0),
            "after_version": 0,
            "after_attempt": 0,
        },
        cutoff,
        batch,
    )
    dispatch = await _prune_table(
        engine,
        _PRUNE_DISPATCH,
        {"after_tenant": "", "after_plan": uuid.UUID(int=0), "after_version": 0},
        cutoff,
        batch,
    )
    keys = await _prune_table(
        engine, _PRUNE_IDEMPOTENCY_KEYS, {"after_tenant": "", "after_key": ""}, cutoff, batch
    )
    cache = await _prune_table(
        engine, _PRUNE_PLAN_CACHE, {"after_tenant": "", "after_key": ""}, cutoff, batch
    )
    return PruneStats(
        cutoff=cutoff,
        run_events=events,
        generation_attempts=provenance,
        dispatch=dispatch,
        idempotency_keys=keys,
        plan_cache=cache,
    )
