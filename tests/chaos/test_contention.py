"""R4 (RELIABILITY §2): 16 claimers race over 2,000 ready runs; each run is claimed exactly once.

The claimers are 16 asyncio tasks of this process, each with its own Postgres connection,
calling ``RunStore.claim_runs`` (the statement a worker's claim loop runs) in a loop,
released together by an ``asyncio.Barrier``. In-process claimers rather than 16 worker
processes: on 2 cores, 16 Python processes spend their time starting up and scheduling,
while the contention under test is in Postgres (16 sessions running ``FOR UPDATE SKIP
LOCKED`` over the same index head at once), which 16 connections reproduce exactly.

Pass: the append-only claim log (``run.leased`` events) names every run exactly once, and the
same claimer the statement returned it to; no deadlock (the claim would raise, and
``pg_stat_database.deadlocks`` does not move); no lock wait over 1 s (each session runs with
``lock_timeout = 1s``, so a longer wait fails the claim; claim latency and a sampler of
``pg_locks`` bound it too).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest

from executor_service.store.runs import RunStore
from planexec.db.pg import create_pool

from .conftest import SCALE, create_runs, make_plan

CLAIMERS = 16
RUNS = 2000 * SCALE
BATCH = 4
"""Runs per claim: small, so that there are many claim rounds (RUNS / BATCH) to race."""

pytestmark = pytest.mark.timeout(120 * SCALE)


async def _deadlocks(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value: int = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
    return value


class LockWaitSampler:
    """Samples ``pg_locks`` every 5 ms: lock waits seen by lock type, and the longest.

    The duration of a wait is bounded above by the time since its statement started
    (``pg_stat_activity.state_change``).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.waits: Counter[str] = Counter()
        self.longest_s = 0.0
        self._running = True
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while self._running:
            rows = await self._pool.fetch(
                "SELECT l.locktype, extract(epoch FROM clock_timestamp() - a.state_change) AS s"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.datname = current_database()"
            )
            for row in rows:
                self.waits[row["locktype"]] += 1
                self.longest_s = max(self.longest_s, float(row["s"]))
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self._running = False
        assert self._task is not None
        await self._task


async def _claimer(
    db_url: str, name: str, barrier: asyncio.Barrier
) -> tuple[str, list[uuid.UUID], list[float]]:
    """Claim ``BATCH`` runs at a time on one session until a claim returns none."""
    own = await create_pool(db_url, min_size=1, max_size=1)
    try:
        await own.execute("SET lock_timeout = '1s'")  # the one session of this claimer
        store = RunStore(own)
        got: list[uuid.UUID] = []
        latencies: list[float] = []
        await barrier.wait()
        while True:
            started = time.perf_counter()
            claimed = await store.claim_runs(name, limit=BATCH, ttl_s=3600)
            latencies.append(time.perf_counter() - started)
            if not claimed:
                return name, got, latencies
            got.extend(run.run_id for run in claimed)
    finally:
        await own.close()


async def test_sixteen_claimers_claim_each_run_exactly_once(
    db_url: str, pool: asyncpg.Pool
) -> None:
    plans = [make_plan([{"id": "only", "tool": "noop", "args": {"value": i}}]) for i in range(RUNS)]
    run_ids = await create_runs(pool, plans)
    deadlocks_before = await _deadlocks(pool)
    barrier = asyncio.Barrier(CLAIMERS + 1)
    tasks = [
        asyncio.create_task(_claimer(db_url, f"claimer-{i:02d}", barrier)) for i in range(CLAIMERS)
    ]
    sampler = LockWaitSampler(pool)
    sampler.start()
    await barrier.wait()
    started = time.monotonic()
    results = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    await sampler.stop()
    await asyncio.sleep(0.5)  # closed sessions flush their statistics
    deadlocks = await _deadlocks(pool) - deadlocks_before

    returned: dict[uuid.UUID, list[str]] = {}
    for name, got, _ in results:
        for run_id in got:
            returned.setdefault(run_id, []).append(name)
    log = await pool.fetch(
        "SELECT run_id, payload->>'worker' AS worker FROM executor.run_events"
        " WHERE type = 'run.leased' AND run_id = ANY($1::uuid[])",
        run_ids,
    )
    logged: dict[uuid.UUID, list[str]] = {}
    for row in log:
        logged.setdefault(row["run_id"], []).append(row["worker"])
    latencies = sorted(s for _, _, ls in results for s in ls)
    per_claimer = sorted(len(got) for _, got, _ in results)
    stats: dict[str, Any] = {
        "runs": RUNS,
        "claimers": CLAIMERS,
        "claims": len(latencies),
        "elapsed_s": round(elapsed, 2),
        "runs_per_claimer_min_max": (per_claimer[0], per_claimer[-1]),
        "claim_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "claim_max_ms": round(1000 * latencies[-1], 1),
        "deadlocks": deadlocks,
        "sampled_lock_waits": dict(sampler.waits),
        "longest_sampled_wait_s": round(sampler.longest_s, 3),
    }
    print(f"\nR4 claim contention (in-process claimers, one connection each): {stats}")

    assert set(returned) == set(run_ids), f"{len(set(run_ids) - set(returned))} never claimed"
    assert all(len(names) == 1 for names in returned.values()), "a run was returned twice"
    assert logged == returned, "the claim log disagrees with what the claims returned"
    assert per_claimer[-2] > 0, "one claimer took everything: there was no race"
    assert deadlocks == 0
    assert latencies[-1] < 1.0, f"a claim took {latencies[-1]:.2f} s"
    assert sampler.longest_s < 1.0, sampler.longest_s
