"""R3 (RELIABILITY §2): a paused worker loses its lease mid-step; its late write is fenced.

Worker A leases runs whose second step is a slow keyed POST to the sink (2 s). While the
calls are in flight A is SIGSTOPped; the lease (TTL 1 s) lapses, worker B takes the runs over
and sends the same calls with the same idempotency keys. A is SIGCONTinued while B still
holds the runs: A's calls return and A tries to commit their outcome with its old lease
token. The fenced commit (``UPDATE ... WHERE lease_token = :mine``) must change nothing:
A logs ``lease_lost``, every attempt row and ``step.succeeded`` event comes from B, and the
sink made one effect per step although it received each call twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest

from ..support.history import assert_legal, load_histories
from ..support.recording_server import RecordingServer
from .conftest import SCALE, Spawn, all_finished, create_runs, events_of, make_plan, until

TTL_S = 1.0
SLOW_S = 2.0
PAUSE_S = 3.0
RUNS = 3 * SCALE

pytestmark = pytest.mark.timeout(120 * SCALE)


def zombie_steps(tag: str) -> list[dict[str, Any]]:
    """A fast keyed POST, then the slow one (the sink sleeps ``SLOW_S`` on it)."""
    return [
        {"id": "first", "tool": "sink.effect", "args": {"name": f"{tag}.first", "body": {}}},
        {
            "id": "slow",
            "tool": "sink.effect",
            "depends_on": ["first"],
            "args": {"name": f"{tag}.slow", "body": {"n": 1}},
            "timeout_s": 10,
        },
    ]


async def _leased_by(pool: asyncpg.Pool, worker: str, runs: int) -> None:
    count = await pool.fetchval(
        "SELECT count(DISTINCT run_id) FROM executor.run_events"
        " WHERE type = 'run.leased' AND payload->>'worker' = $1",
        worker,
    )
    assert count == runs, f"{count} of {runs} runs leased by {worker}"


async def test_paused_worker_cannot_write_after_takeover(
    pool: asyncpg.Pool, sink: RecordingServer, spawn: Spawn
) -> None:
    tags = [f"z{i:03d}" for i in range(RUNS)]
    for tag in tags:
        sink.slow(f"{tag}.slow", SLOW_S)
    worker_a = spawn("a", lease_ttl_s=TTL_S, concurrency=RUNS, step_concurrency=RUNS)
    a_id = await worker_a.ready()
    run_ids = await create_runs(pool, [make_plan(zombie_steps(tag)) for tag in tags])

    async def slow_steps_in_flight() -> None:
        # A commits "first" in the same loop turn that starts "slow" (idempotent: no row).
        done = await pool.fetchval(
            "SELECT count(*) FROM executor.run_events WHERE type = 'step.succeeded'"
            " AND step_id = 'first' AND run_id = ANY($1::uuid[])",
            run_ids,
        )
        assert done == RUNS, f"{done} of {RUNS} first steps done"

    await until(slow_steps_in_flight, timeout_s=20)
    await asyncio.sleep(0.3)  # the slow requests are at the sink now
    worker_a.send(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        worker_b = spawn("b", lease_ttl_s=TTL_S, concurrency=RUNS, step_concurrency=RUNS)
        b_id = await worker_b.ready()
        await until(lambda: _leased_by(pool, b_id, RUNS), timeout_s=20)
        await asyncio.sleep(max(0.0, PAUSE_S - (time.monotonic() - stopped)))
        b_holds = await pool.fetchval(
            "SELECT count(*) FROM executor.runs WHERE lease_owner = $1 AND run_id = ANY($2)",
            b_id,
            run_ids,
        )
    finally:
        worker_a.send(signal.SIGCONT)
    paused_s = time.monotonic() - stopped

    def lost() -> set[str]:
        return {
            line["run_id"]
            for line in worker_a.lines()
            if line.get("event") == "lease_lost" and "run_id" in line
        }

    async def a_saw_lease_lost() -> None:
        assert lost() == {str(r) for r in run_ids}, worker_a.log_tail()

    await until(a_saw_lease_lost, timeout_s=10)
    await until(lambda: all_finished(pool, run_ids, frozenset({"succeeded"})), timeout_s=20)

    attempts = await pool.fetch(
        "SELECT step_id, worker, status FROM executor.attempts WHERE run_id = ANY($1::uuid[])",
        run_ids,
    )
    events = await events_of(pool, run_ids)
    stats = await asyncio.to_thread(sink.stats)
    log = await asyncio.to_thread(sink.log)
    slow_requests = Counter(e["name"] for e in log if e["name"].endswith(".slow"))
    print(
        f"\nR3 zombie: runs={RUNS} paused_s={paused_s:.1f} b_held_at_resume={b_holds}"
        f" lease_lost_lines={len(lost())} slow_requests={dict(slow_requests)}"
        f" effects={stats['effects']} replayed={stats['replayed']}"
    )

    assert b_holds == RUNS, "A was resumed after B had let go: the late write was not racing"
    # A's late commits wrote nothing: every attempt and success is B's or (first) A's before.
    slow_workers = {a["worker"] for a in attempts if a["step_id"] == "slow"}
    assert slow_workers == {b_id}, slow_workers
    assert {a["worker"] for a in attempts if a["step_id"] == "first"} == {a_id}
    succeeded = Counter(
        (e["run_id"], e["step_id"]) for e in events if e["type"] == "step.succeeded"
    )
    assert set(succeeded.values()) == {1} and len(succeeded) == 2 * RUNS, succeeded
    # Both workers sent each slow call (same key); the sink made one effect of the two.
    assert all(slow_requests[f"{tag}.slow"] == 2 for tag in tags), slow_requests
    assert stats["effects"] == 2 * RUNS, stats
    assert stats["replayed"] == RUNS, stats
    keys = [e["key"] for e in log if e["outcome"] == "effect"]
    assert_legal(await load_histories(pool, run_ids), keys)
    # The zombie is a healthy worker again: it drains and exits 0 on SIGTERM.
    worker_a.send(signal.SIGTERM)
    assert await worker_a.wait_exit(timeout_s=15) == 0, worker_a.log_tail()


async def test_worker_whose_heartbeat_finds_the_lease_gone_lets_the_run_go(
    pool: asyncpg.Pool, spawn: Spawn
) -> None:
    worker_a = spawn("a", lease_ttl_s=TTL_S, drain_s=2)
    worker_b = spawn("b", lease_ttl_s=TTL_S)
    a_id, b_id = await worker_a.ready(), await worker_b.ready()
    worker_b.send(signal.SIGSTOP)  # so that A claims the run
    try:
        plan = make_plan([{"id": "hold", "tool": "wait", "args": {"seconds": 4}}])
        (run_id,) = await create_runs(pool, [plan])
        await until(lambda: _leased_by(pool, a_id, 1), timeout_s=20)
    finally:
        worker_b.send(signal.SIGCONT)
    worker_a.send(signal.SIGSTOP)  # mid-step: the timer has about 4 s to go
    try:
        await until(lambda: _leased_by(pool, b_id, 1), timeout_s=20)
    finally:
        worker_a.send(signal.SIGCONT)
    await until(lambda: all_finished(pool, [run_id], frozenset({"succeeded"})), timeout_s=20)

    # A holds no run any more: a SIGTERM has nothing to drain (the bug: "draining runs=1",
    # and the exit waits out the whole grace).
    worker_a.send(signal.SIGTERM)
    assert await worker_a.wait_exit(timeout_s=15) == 0
    draining = [line for line in worker_a.lines() if line["event"] == "draining"]
    assert draining == [], draining
