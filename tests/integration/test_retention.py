"""Retention on a real database: old events of finished runs and old provenance go, in batches.

Rows are written with SQL and aged by setting ``finished_at`` / ``at`` / ``created_at`` in the
past; what must stay (live runs' events, run rows, steps, attempts, plan versions) is compared
before and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from planexec.db import create_engine
from planexec.retention import prune

PLANEXEC = str(Path(sys.executable).parent / "planexec")
OLD, RECENT = 10, 1
"""Ages in days of the old and the recent data; the prunes keep 5 days."""
KEEP = timedelta(days=5)


@dataclass
class Seeded:
    """What was written, by expected fate."""

    pruned_runs: dict[uuid.UUID, int] = field(default_factory=dict)
    """Finished long ago: run id -> number of events (all of which must go)."""
    kept_runs: dict[uuid.UUID, int] = field(default_factory=dict)
    """Every other run: run id -> number of events (all of which must stay)."""
    old_provenance: int = 0
    kept_provenance: set[tuple[str, uuid.UUID, int, int]] = field(default_factory=set)
    kept_dispatch: set[tuple[str, uuid.UUID, int]] = field(default_factory=set)
    """Dispatch entries that stay: recently acked, or queued whatever their age."""
    kept_keys: set[tuple[str, str]] = field(default_factory=set)
    kept_cache: set[tuple[str, str]] = field(default_factory=set)


async def _run(
    conn: AsyncConnection,
    tenant: str,
    status: str,
    *,
    events: int,
    age_days: float,
    finished: bool,
) -> uuid.UUID:
    """A run with two steps, two attempts and ``events`` events, all ``age_days`` old."""
    run_id = uuid.uuid4()
    at = f"now() - make_interval(days => {age_days})"
    await conn.execute(
        text(
            "INSERT INTO executor.runs (tenant, run_id, plan_id, plan_version, content_hash,"
            " catalog_version, policy_version, plan, status, created_by, next_seq, dedup_key,"
            f" created_at, updated_at, finished_at) VALUES (:tenant, :run_id, :plan_id, 1,"
            " 'sha256:x', 'c1', 'p1', '{}', :status, 'tester', :next_seq, :dedup,"
            f" {at}, {at}, {at if finished else 'NULL'})"
        ),
        {
            "tenant": tenant,
            "run_id": run_id,
            "plan_id": uuid.uuid4(),
            "status": status,
            "next_seq": events + 1,
            "dedup": f"plan:{run_id}",
        },
    )
    for step in ("a", "b"):
        await conn.execute(
            text(
                "INSERT INTO executor.steps (tenant, run_id, step_id, status, attempts, output)"
                " VALUES (:tenant, :run_id, :step, 'succeeded', 1, '{\"ok\": true}')"
            ),
            {"tenant": tenant, "run_id": run_id, "step": step},
        )
        await conn.execute(
            text(
                "INSERT INTO executor.attempts (tenant, run_id, step_id, attempt,"
                " idempotency_key, status, started_at, finished_at, duration_s)"
                f" VALUES (:tenant, :run_id, :step, 1, :key, 'succeeded', {at}, {at}, 0.01)"
            ),
            {"tenant": tenant, "run_id": run_id, "step": step, "key": f"{run_id}:{step}"},
        )
    await conn.execute(
        text(
            "INSERT INTO executor.run_events (tenant, run_id, seq, type, payload, at)"
            " SELECT :tenant, :run_id, s, 'step.succeeded', CAST(:payload AS jsonb),"
            f" {at} FROM generate_series(1, :n) AS s"
        ),
        {"tenant": tenant, "run_id": run_id, "n": events, "payload": json.dumps({"x": "y" * 50})},
    )
    return run_id


async def _plan_version(
    conn: AsyncConnection, tenant: str, plan_id: uuid.UUID, version: int, attempts: int, age: float
) -> list[tuple[str, uuid.UUID, int, int]]:
    """A plan version ``age`` days old with ``attempts`` generation attempts."""
    at = f"now() - make_interval(days => {age})"
    if version == 1:
        await conn.execute(
            text(
                "INSERT INTO planner.plans (tenant, plan_id, latest_version, status, intent,"
                f" created_by, created_at, updated_at) VALUES (:tenant, :plan_id, 1, 'ready',"
                f" 'do it', 'tester', {at}, {at})"
            ),
            {"tenant": tenant, "plan_id": plan_id},
        )
    else:
        await conn.execute(
            text("UPDATE planner.plans SET latest_version = :v WHERE tenant = :t AND plan_id = :p"),
            {"v": version, "t": tenant, "p": plan_id},
        )
    await conn.execute(
        text(
            "INSERT INTO planner.plan_versions (tenant, plan_id, version, status, body,"
            " content_hash, signature, validation, policy_decisions, created_at)"
            " VALUES (:tenant, :plan_id, :version, 'ready', '{}', 'sha256:x', 'sig', '{}', '[]',"
            f" {at})"
        ),
        {"tenant": tenant, "plan_id": plan_id, "version": version},
    )
    await conn.execute(
        text(
            "INSERT INTO planner.generation_attempts (tenant, plan_id, version, attempt, backend,"
            " messages, raw_response, latency_s, created_at) SELECT :tenant, :plan_id, :version,"
            ' a, \'openai\', \'[{"role": "user", "content": "do it"}]\', \'raw\', 0.5,'
            f" {at} FROM generate_series(1, :n) AS a"
        ),
        {"tenant": tenant, "plan_id": plan_id, "version": version, "n": attempts},
    )
    return [(tenant, plan_id, version, a) for a in range(1, attempts + 1)]


async def _seed(engine: AsyncEngine) -> Seeded:
    seeded = Seeded()
    async with engine.begin() as conn:
        # Several tenants, in mixed case: the batches' keyset over (tenant, plan_id, ...)
        # crosses tenants and follows the database's ordering of text.
        for tenant in ("acme", "Globex"):
            for status, n in (("succeeded", 7), ("failed", 5), ("cancelled", 2)):
                run = await _run(conn, tenant, status, events=n, age_days=OLD, finished=True)
                seeded.pruned_runs[run] = n
            # Finished recently: inside the retention window.
            run = await _run(conn, tenant, "succeeded", events=4, age_days=RECENT, finished=True)
            seeded.kept_runs[run] = 4
            # Old but not finished: their events are their live history, whatever their age.
            # dead_letter gets a finished_at too, to show the status decides, not the column.
            for status, finished in (
                ("running", False),
                ("paused", False),
                ("needs_attention", False),
                ("dead_letter", True),
                ("pending", False),
            ):
                run = await _run(conn, tenant, status, events=3, age_days=OLD, finished=finished)
                seeded.kept_runs[run] = 3
        for tenant in ("acme", "Globex", "beta"):
            plan_id = uuid.uuid4()
            seeded.old_provenance += len(await _plan_version(conn, tenant, plan_id, 1, 3, OLD))
            seeded.kept_provenance.update(await _plan_version(conn, tenant, plan_id, 2, 2, RECENT))
            await _bookkeeping(conn, seeded, tenant, plan_id)
    return seeded


async def _bookkeeping(
    conn: AsyncConnection, seeded: Seeded, tenant: str, plan_id: uuid.UUID
) -> None:
    """Dispatch entries, idempotency keys and cache entries of the plan's two versions.

    Per tenant, what goes: v1's dispatch entry (acked long ago), two old idempotency keys, two
    expired cache entries. What stays: v2's entry (queued long ago, never acked: an executor
    still has to make its run), a recent key, a live cache entry.
    """
    old = f"now() - make_interval(days => {OLD})"
    await conn.execute(
        text(
            "INSERT INTO planner.dispatch (tenant, plan_id, version, status, enqueued_at,"
            f" acked_at) VALUES (:t, :p, 1, 'acked', {old}, {old}),"
            f" (:t, :p, 2, 'queued', {old}, NULL)"
        ),
        {"t": tenant, "p": plan_id},
    )
    seeded.kept_dispatch.add((tenant, plan_id, 2))
    for key, age in (("old-1", OLD), ("old-2", OLD), ("recent", RECENT)):
        await conn.execute(
            text(
                "INSERT INTO planner.idempotency_keys (tenant, key, request_hash, plan_id,"
                f" version, created_at) VALUES (:t, :k, 'h', :p, 1,"
                f" now() - make_interval(days => {age}))"
            ),
            {"t": tenant, "k": key, "p": plan_id},
        )
    seeded.kept_keys.add((tenant, "recent"))
    # Expiry decides, not age: an entry that expired a minute ago goes.
    for key, expires in (("gone-1", "-1 day"), ("gone-2", "-1 minute"), ("live", "1 hour")):
        await conn.execute(
            text(
                "INSERT INTO planner.plan_cache (tenant, cache_key, plan_id, version, expires_at)"
                " VALUES (:t, :k, :p, 1, now() + CAST(CAST(:e AS text) AS interval))"
            ),
            {"t": tenant, "k": key, "p": plan_id, "e": expires},
        )
    seeded.kept_cache.add((tenant, "live"))


async def _snapshot(engine: AsyncEngine, query: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(query))).all()]


SUMMARY_TABLES = {
    "runs": "SELECT * FROM executor.runs ORDER BY run_id",
    "steps": "SELECT * FROM executor.steps ORDER BY run_id, step_id",
    "attempts": "SELECT * FROM executor.attempts ORDER BY run_id, step_id, kind, attempt",
    "plans": "SELECT * FROM planner.plans ORDER BY tenant, plan_id",
    "plan_versions": "SELECT * FROM planner.plan_versions ORDER BY tenant, plan_id, version",
}


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_prune_deletes_exactly_old_data_of_finished_runs_in_bounded_batches(
    engine: AsyncEngine,
) -> None:
    seeded = await _seed(engine)
    summaries = {name: await _snapshot(engine, q) for name, q in SUMMARY_TABLES.items()}
    old_events = sum(seeded.pruned_runs.values())
    assert old_events == 28 and seeded.old_provenance == 9

    stats = await prune(engine, older_than=KEEP, batch=3)

    # Every batch but the last is full: 28 events in ceil(28/3) = 10 transactions, 9
    # generation attempts in 3; no transaction deleted more than the batch.
    assert (stats.run_events.rows, stats.run_events.batches) == (28, 10)
    assert (stats.generation_attempts.rows, stats.generation_attempts.batches) == (9, 3)
    # Three tenants: 3 acked entries in 1 batch, 6 old keys and 6 expired entries in 2 each.
    assert (stats.dispatch.rows, stats.dispatch.batches) == (3, 1)
    assert (stats.idempotency_keys.rows, stats.idempotency_keys.batches) == (6, 2)
    assert (stats.plan_cache.rows, stats.plan_cache.batches) == (6, 2)
    assert set(
        await _snapshot(engine, "SELECT tenant, plan_id, version FROM planner.dispatch")
    ) == (seeded.kept_dispatch)
    assert set(await _snapshot(engine, "SELECT tenant, key FROM planner.idempotency_keys")) == (
        seeded.kept_keys
    )
    assert set(await _snapshot(engine, "SELECT tenant, cache_key FROM planner.plan_cache")) == (
        seeded.kept_cache
    )

    remaining = dict(
        await _snapshot(
            engine,
            "SELECT run_id, array_agg(seq ORDER BY seq) FROM executor.run_events GROUP BY run_id",
        )
    )
    # Kept runs keep their whole, gap-free history; pruned runs have none left.
    assert remaining == {run: list(range(1, n + 1)) for run, n in seeded.kept_runs.items()}
    provenance = set(
        await _snapshot(
            engine, "SELECT tenant, plan_id, version, attempt FROM planner.generation_attempts"
        )
    )
    assert provenance == seeded.kept_provenance
    for name, query in SUMMARY_TABLES.items():
        assert await _snapshot(engine, query) == summaries[name], f"{name} changed"

    again = await prune(engine, older_than=KEEP, batch=3)
    assert (again.run_events.rows, again.run_events.batches) == (0, 0)
    assert (again.generation_attempts.rows, again.generation_attempts.batches) == (0, 0)
    assert (again.dispatch.rows, again.idempotency_keys.rows, again.plan_cache.rows) == (0, 0, 0)

    # With a batch larger than the backlog, one transaction per table suffices; a shorter
    # age now reaches the recently finished runs and the recent plan versions too.
    wider = await prune(engine, older_than=timedelta(hours=1), batch=1000)
    assert (wider.run_events.rows, wider.run_events.batches) == (8, 1)
    assert (wider.generation_attempts.rows, wider.generation_attempts.batches) == (6, 1)
    live = {run: n for run, n in seeded.kept_runs.items() if n == 3}
    left = dict(
        await _snapshot(engine, "SELECT run_id, count(*) FROM executor.run_events GROUP BY run_id")
    )
    assert left == live


async def test_prune_refuses_a_bad_batch_or_age(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="batch"):
        await prune(engine, older_than=KEEP, batch=0)
    with pytest.raises(ValueError, match="older_than"):
        await prune(engine, older_than=timedelta(days=-1))


async def _cli(db_url: str, cwd: Path, *args: str, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLANEXEC_")}
    environ |= {"PLANEXEC_DATABASE_URL": db_url, **env}
    proc = await asyncio.create_subprocess_exec(
        PLANEXEC,
        "prune",
        *args,
        cwd=cwd,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def test_cli_prunes_with_the_configured_age_and_batch(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    seeded = await _seed(engine)

    code, out = await _cli(db_url, tmp_path)
    assert code == 2 and "--older-than" in out, out

    code, out = await _cli(
        db_url, tmp_path, PLANEXEC_RETENTION_DAYS="5", PLANEXEC_RETENTION_BATCH="10"
    )
    assert code == 0, out
    assert "28 run events (3 batches), 9 generation attempts (1 batches)" in out, out
    assert "3 dispatch entries, 6 idempotency keys, 6 expired plan cache entries" in out, out

    code, out = await _cli(db_url, tmp_path, "--older-than", "5", "--batch", "4")
    assert code == 0, out
    assert "0 run events (0 batches), 0 generation attempts (0 batches)" in out, out
    left = await _snapshot(engine, "SELECT count(*) FROM executor.run_events")
    assert left == [(sum(seeded.kept_runs.values()),)]

    code, out = await _cli(db_url, tmp_path, "--older-than", "0")
    assert code == 2 and "greater than 0" in out, out
