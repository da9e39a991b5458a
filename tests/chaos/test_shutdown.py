"""R14 (RELIABILITY §2): SIGTERM a worker with steps in flight; it drains, releases, exits 0.

Worker W1 holds six runs: three whose step in flight is a keyed POST the sink answers after
1 s (shorter than the 2 s drain grace), three whose step is a 4 s timer (longer). Worker W2
is up but paused while W1 claims, so W1 holds all six. Then W1 gets SIGTERM and new runs are
created at once. Pass: W1 claims nothing after the signal (W2 gets every new run); the short
steps finish and are committed by W1 within the grace, and are not called again; the long
steps' runs are released (``run.released``) when the grace ends and W2 re-claims them at once
(the lease TTL is 30 s, so only the release explains it); W1 exits with status 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from ..support.history import assert_legal, load_histories
from ..support.recording_server import RecordingServer
from .conftest import (
    SCALE,
    Spawn,
    WorkerProcess,
    all_finished,
    create_runs,
    db_now,
    events_of,
    make_plan,
    until,
)

DRAIN_S = 2.0
SHORT_S = 1.0
LONG_S = 4.0
TTL_S = 30.0
EACH = 3 * SCALE
"""Runs of each kind (short, long, created after the signal)."""

pytestmark = pytest.mark.timeout(120 * SCALE)


def short_steps(tag: str) -> list[dict[str, Any]]:
    """A slow keyed POST (``SHORT_S``), then a noop that must not start during the drain."""
    return [
        {"id": "call", "tool": "sink.effect", "args": {"name": f"{tag}.call", "body": {}}},
        {"id": "after", "tool": "noop", "depends_on": ["call"], "args": {}},
    ]


def long_steps(tag: str) -> list[dict[str, Any]]:
    """A timer longer than the drain grace."""
    return [{"id": "hold", "tool": "wait", "args": {"seconds": LONG_S}}]


async def _leased_by(pool: asyncpg.Pool, worker: str, runs: list[Any]) -> None:
    count = await pool.fetchval(
        "SELECT count(*) FROM executor.runs WHERE lease_owner = $1 AND run_id = ANY($2::uuid[])",
        worker,
        runs,
    )
    assert count == len(runs), f"{count} of {len(runs)} leased by {worker}"


async def _hold_in_flight(
    pool: asyncpg.Pool, sink: RecordingServer, w1_id: str, w2: WorkerProcess
) -> tuple[list[Any], list[Any]]:
    """Let W1 alone claim the short and long runs; return once their steps are in flight."""
    w2.send(signal.SIGSTOP)
    try:
        for i in range(EACH):
            sink.slow(f"s{i}.call", SHORT_S)
        short = await create_runs(pool, [make_plan(short_steps(f"s{i}")) for i in range(EACH)])
        long = await create_runs(pool, [make_plan(long_steps(f"l{i}")) for i in range(EACH)])
        await until(lambda: _leased_by(pool, w1_id, short + long), timeout_s=20)
    finally:
        w2.send(signal.SIGCONT)
    await asyncio.sleep(0.3)  # the steps are in flight now
    return short, long


async def test_sigterm_drains_releases_and_exits_zero(
    pool: asyncpg.Pool, sink: RecordingServer, spawn: Spawn
) -> None:
    room = {"concurrency": 4 * EACH, "step_concurrency": 4 * EACH, "lease_ttl_s": TTL_S}
    w1 = spawn("w1", drain_s=DRAIN_S, **room)
    w2 = spawn("w2", **room)
    w1_id, w2_id = await w1.ready(), await w2.ready()
    short, long = await _hold_in_flight(pool, sink, w1_id, w2)

    signalled = await db_now(pool)
    w1.send(signal.SIGTERM)
    sent = time.monotonic()
    late = await create_runs(pool, [make_plan(short_steps(f"n{i}")) for i in range(EACH)])
    code = await w1.wait_exit(timeout_s=DRAIN_S + 10)
    exit_s = time.monotonic() - sent
    every = short + long + late
    await until(lambda: all_finished(pool, every, frozenset({"succeeded"})), timeout_s=30)

    events = await events_of(pool, every)
    attempts = await pool.fetch(
        "SELECT run_id, step_id, worker, status FROM executor.attempts"
        " WHERE run_id = ANY($1::uuid[])",
        every,
    )
    stats = await asyncio.to_thread(sink.stats)
    by_run: dict[Any, list[dict[str, Any]]] = {}
    for event in events:
        by_run.setdefault(event["run_id"], []).append(event)

    def first(run: Any, kind: str, worker: str | None = None) -> dict[str, Any]:
        return next(
            e
            for e in by_run[run]
            if e["type"] == kind and (worker is None or e["payload"].get("worker") == worker)
        )

    grace = timedelta(seconds=DRAIN_S)
    releases = [first(run, "run.released", w1_id)["at"] - signalled for run in long]
    reclaims = [
        first(run, "run.leased", w2_id)["at"] - first(run, "run.released", w1_id)["at"]
        for run in long
    ]
    print(
        f"\nR14 graceful shutdown: exit_code={code} exit_s={exit_s:.2f} (grace {DRAIN_S})"
        f" long_released_after_s={[round(r.total_seconds(), 2) for r in releases]}"
        f" reclaimed_after_s={[round(r.total_seconds(), 3) for r in reclaims]}"
        f" effects={stats['effects']} requests={stats['requests']}"
    )

    assert code == 0, w1.log_tail()
    assert exit_s < DRAIN_S + 5
    assert any(line.get("event") == "draining" for line in w1.lines())
    # No claim by W1 after the signal; W2 took every run created after it.
    late_claims = [e for e in events if e["type"] == "run.leased" and e["at"] > signalled]
    assert all(e["payload"]["worker"] != w1_id for e in late_claims), late_claims
    assert all(first(run, "run.leased")["payload"]["worker"] == w2_id for run in late)
    # Short steps were in flight at the signal, finished within the grace, committed by W1.
    for run in short:
        done = first(run, "step.succeeded")
        assert done["step_id"] == "call"
        assert signalled < done["at"] <= signalled + grace, (done["at"], signalled)
        assert first(run, "run.released", w1_id)["seq"] > done["seq"]
    call_workers = {a["worker"] for a in attempts if a["step_id"] == "call"}
    after_workers = {a["worker"] for a in attempts if a["step_id"] == "after"}
    assert call_workers == {w1_id, w2_id}  # W1's for the short runs, W2's for the late ones
    assert after_workers == {w2_id}, "W1 started a step while draining"
    assert stats["effects"] == stats["requests"] == 2 * EACH, stats  # none called twice
    # Long steps: released when the grace ran out, re-claimed at once by W2.
    assert all(grace <= r <= grace + timedelta(seconds=1.5) for r in releases), releases
    assert all(r < timedelta(seconds=1) for r in reclaims), reclaims
    assert {a["worker"] for a in attempts if a["step_id"] == "hold"} == {w2_id}
    assert Counter(e["type"] for e in events)["run.succeeded"] == 3 * EACH
    log = await asyncio.to_thread(sink.log)
    assert_legal(await load_histories(pool, every), [e["key"] for e in log])
