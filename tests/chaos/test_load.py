"""L1 (RELIABILITY §2), CI variant: two worker processes under a steady offered load.

An open-loop generator (``bench.executor_load.offer_runs``, the one ``make bench`` uses)
creates ``RATE`` runs/s of 10-step plans for ``SECONDS`` seconds; every step is the built-in
``wait`` tool sleeping 50 ms, so a run takes at least 0.5 s and about ``RATE * 0.55`` runs are
in flight at once. Two ``planexec worker`` processes drive them.

Pass:

- 0 lost runs: every created run ends ``succeeded`` with its 10 steps succeeded, within
  ``DRAIN_S`` of the last creation.
- claim-to-start p99 (run creation, ``runs.created_at``, to its first step's start,
  ``steps.first_started_at``) under ``CLAIM_TO_START_P99_S`` = 3 s. Why that bound: the two
  workers have 2 x 32 run slots against about 6 runs in flight, so a run never waits for a
  slot; what remains is the wake-up (``NOTIFY``, else the 0.2 s poll of these workers), one
  claim statement and the driver's start, about 30 ms p99 on this machine when it is idle.
  The bound is 12x the nightly target of 250 ms, to absorb a 2-core machine shared with other
  test processes (load average above 10 was seen); it still fails on a lost wake-up that
  leaves runs to a lease TTL (30 s) or on claims that stall behind each other.
- connections: the most ``pg_stat_activity`` rows of the test database that belong to one
  worker process (matched by client port) never exceed what its pool settings allow
  (``bench.executor_load.connection_bound``: asyncpg pool ``db_pool_size`` + one LISTEN
  connection), here with a deliberately small pool (4) so that 32 runs per worker must share
  it.

``PLANEXEC_CHAOS_SCALE`` multiplies the duration.
"""

from __future__ import annotations

import asyncpg
import pytest

from bench.executor_load import (
    ActivitySampler,
    connection_bound,
    offer_runs,
    run_figures,
    sequential_plan,
    wait_finished,
)
from executor_service.settings import ExecutorSettings
from planexec.db.notify import asyncpg_dsn

from .conftest import SCALE, Spawn

RATE = 10.0
"""Runs offered per second (100 steps/s)."""
SECONDS = 10.0 * SCALE
STEPS = 10
TOOL_S = 0.05
DRAIN_S = 30.0
CLAIM_TO_START_P99_S = 3.0
POOL_SIZE = 4
MAX_OVERFLOW = 2

pytestmark = pytest.mark.timeout(120 * SCALE)


async def test_sustained_load_two_workers(spawn: Spawn, pool: asyncpg.Pool, db_url: str) -> None:
    settings = {"db_pool_size": POOL_SIZE, "db_max_overflow": MAX_OVERFLOW}
    bound = connection_bound(ExecutorSettings(**settings))  # type: ignore[arg-type]
    workers = [
        spawn(name, concurrency=32, step_concurrency=64, **settings) for name in ("w1", "w2")
    ]
    for worker in workers:
        await worker.ready()
    plans = [
        sequential_plan(STEPS, "wait", {"seconds": TOOL_S}) for _ in range(int(RATE * SECONDS))
    ]
    dbname = db_url.rsplit("/", 1)[1]
    sampler = ActivitySampler(
        asyncpg_dsn(db_url), dbname, {w.name: w.pid for w in workers}, every_s=0.1
    )
    sampler.start()
    try:
        offered = await offer_runs(pool, plans, RATE)
        await wait_finished(pool, offered.run_ids, DRAIN_S)
    finally:
        await sampler.stop()
    figures = await run_figures(pool, offered.run_ids)
    logs = "\n".join(w.log_tail(1500) for w in workers)

    assert figures["lost"] == 0, (figures["statuses"], logs)
    assert figures["statuses"] == {"succeeded": len(plans)}, figures["statuses"]
    assert figures["steps_succeeded"] == STEPS * len(plans)
    p99_s = figures["claim_to_start_ms"]["p99"] / 1000
    assert p99_s < CLAIM_TO_START_P99_S, figures
    assert sampler.samples >= 10, sampler.samples  # it sampled throughout the load
    by_worker = {name: sampler.max_by_process.get(name, 0) for name in ("w1", "w2")}
    assert all(n >= 1 for n in by_worker.values()), by_worker  # attribution works
    assert max(by_worker.values()) <= bound["per_process"], (by_worker, bound)
    for worker in workers:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()


def test_connection_bound_reads_the_pool_settings() -> None:
    bound = connection_bound(ExecutorSettings(db_pool_size=7, db_max_overflow=3))
    assert bound == {"asyncpg_pool": 7, "listen": 1, "per_process": 8}
    capped = ExecutorSettings(db_pool_size=7, tool_concurrency={"noop": 2})
    assert connection_bound(capped) == {"asyncpg_pool": 7, "listen": 2, "per_process": 9}
