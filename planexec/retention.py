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

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

FINISHED_RUN_STATUSES = ("succeeded", "failed", "cancelled")
"""Run statuses after which a run gets no more events; only their events are pruned."""


@dataclass(frozen=True)
class _Pruned:
    """One table's prune: which rows go, walked in batches by primary key (keyset)."""

    table: str
    """The table, schema-qualified; aliased ``t`` in ``where`` and ``join``."""
    key: dict[str, Any]
    """Primary key columns, each with a value below every stored one (the walk's start)."""
    where: str
    """What makes a row go; ``:cutoff`` is the age limit."""
    join: str = ""
    """Tables ``where`` reads besides ``t``."""

    def statement(self) -> TextClause:
        """Delete up to ``:batch`` rows whose key is after ``:after_<column>``.

        One row comes back, the number deleted then the greatest key deleted (ordered by
        Postgres, so text keys follow the database's collation), or none when nothing was left.
        """
        t_key = ", ".join(f"t.{k}" for k in self.key)
        return text(
            f"""
            WITH doomed AS (
                SELECT {t_key} FROM {self.table} t {self.join}
                WHERE ({t_key}) > ({", ".join(f":after_{k}" for k in self.key)})
                  AND {self.where}
                ORDER BY {t_key}
                LIMIT :batch
            ), deleted AS (
                DELETE FROM {self.table} x USING doomed d
                WHERE {" AND ".join(f"x.{k} = d.{k}" for k in self.key)}
                RETURNING {", ".join(f"x.{k}" for k in self.key)}
            )
            SELECT count(*) OVER () AS deleted, {", ".join(self.key)}
            FROM deleted ORDER BY {", ".join(f"{k} DESC" for k in self.key)} LIMIT 1
            """
        )


_ZERO_UUID = uuid.UUID(int=0)
_PRUNED = {
    "run_events": _Pruned(
        "executor.run_events",
        {"run_id": _ZERO_UUID, "seq": 0},
        f"r.status IN {FINISHED_RUN_STATUSES!r} AND r.finished_at < :cutoff",
        "JOIN executor.runs r ON r.run_id = t.run_id",
    ),
    "generation_attempts": _Pruned(
        "planner.generation_attempts",
        {"tenant": "", "plan_id": _ZERO_UUID, "version": 0, "attempt": 0},
        "v.created_at < :cutoff",
        "JOIN planner.plan_versions v"
        " ON v.tenant = t.tenant AND v.plan_id = t.plan_id AND v.version = t.version",
    ),
    "dispatch": _Pruned(
        "planner.dispatch",
        {"tenant": "", "plan_id": _ZERO_UUID, "version": 0},
        "t.status = 'acked' AND t.acked_at < :cutoff",
    ),
    "idempotency_keys": _Pruned(
        "planner.idempotency_keys", {"tenant": "", "key": ""}, "t.created_at < :cutoff"
    ),
    "plan_cache": _Pruned(
        "planner.plan_cache", {"tenant": "", "cache_key": ""}, "t.expires_at < now()"
    ),
}
"""Every pruned table by its ``PruneStats`` field, in the order they are pruned."""


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
    engine: AsyncEngine, pruned: _Pruned, cutoff: datetime, batch: int
) -> TablePruned:
    """Run ``pruned``'s statement batch after batch, one transaction each, until it deletes nothing.

    Each batch starts after the greatest key the previous one deleted.
    """
    statement = pruned.statement()
    after = {f"after_{k}": v for k, v in pruned.key.items()}
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
        after = dict(zip(after, tuple(last)[1:], strict=True))


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
    pruned = {
        name: await _prune_table(engine, table, cutoff, batch) for name, table in _PRUNED.items()
    }
    return PruneStats(cutoff=cutoff, **pruned)
