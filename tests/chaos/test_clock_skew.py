"""R17 (RELIABILITY §2): worker clocks 5 minutes off do not change who holds a lease, or when.

Three worker processes share the database: one on the host clock, one run under Debian's
libfaketime at +5 min ("ahead") and one at -5 min ("behind"); their own log timestamps show
the skew. Leases, gate deadlines and ``wake_at`` are computed from Postgres ``now()`` only:

* a run leased by the host-clock worker during a slow step (3 s, longer than the 2 s lease
  TTL, so the lease lives on heartbeats) is not reclaimed by the "ahead" worker;
* a run leased by the "behind" worker is not taken from it by the others;
* a run leased by the "ahead" worker that is then SIGKILLed is reclaimed one TTL after its
  last heartbeat, not 5 minutes later;
* approval gates opened by either skewed worker expire on time by the database clock (the
  run is paused with ``wake_at`` at the deadline, released, and claimed again to expire it);
* a ``wait`` step on either skewed worker lasts its length.

Workers not under test in a phase are stopped (SIGSTOP), so that the worker under test leases
the phase's run. Each run finishes once, with one effect per step at the sink.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ..e2e.processes import base_env, until
from ..support.history import assert_legal, load_histories
from ..support.recording_server import RecordingServer
from .conftest import WorkerProcess, create_runs, events_of, make_plan, statuses

TTL_S = 2.0
SLOW_S = 3.0
GATE_S = 2.0
WAIT_S = 1.5
SKEW = {"ahead": "+5m", "behind": "-5m"}
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime is not installed (apt faketime)"),
]


@pytest.fixture
def workers(db_url: str, catalog: Path, tmp_path: Path) -> Iterator[dict[str, WorkerProcess]]:
    """The host-clock worker "normal" and the skewed workers "ahead" and "behind"."""
    started: dict[str, WorkerProcess] = {}
    for name in ("normal", "ahead", "behind"):
        extra: dict[str, Any] = {}
        if name in SKEW:
            extra = {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME": SKEW[name]}
        env = base_env(
            db_url,
            PLANEXEC_CATALOG_CONFIG=catalog,
            PLANEXEC_POLL_S=0.2,
            PLANEXEC_DRAIN_S=5,
            PLANEXEC_LEASE_TTL_S=TTL_S,
            **extra,
        )
        started[name] = WorkerProcess(name, env, tmp_path, 4).start()
    try:
        yield started
    finally:
        for worker in started.values():
            worker.cleanup()


def _only(workers: dict[str, WorkerProcess], name: str) -> None:
    """Let only worker ``name`` run (the others are stopped, their leases untouched)."""
    for other, worker in workers.items():
        worker.send(signal.SIGCONT if other == name else signal.SIGSTOP)


def _all(workers: dict[str, WorkerProcess]) -> None:
    for worker in workers.values():
        if worker.proc is not None and worker.proc.poll() is None:
            worker.send(signal.SIGCONT)


def slow_post(tag: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "post",
            "tool": "sink.effect",
            "args": {"name": f"{tag}.post", "body": {"tag": tag}},
            "retry": {"max_attempts": 5, "initial_backoff_s": 0.1, "max_backoff_s": 0.5},
        }
    ]


def gated(tag: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "approve_me",
            "tool": "noop",
            "args": {"value": tag},
            "requires_approval": True,
            "approval_timeout_s": GATE_S,
        }
    ]


def timer() -> list[dict[str, Any]]:
    return [{"id": "pause", "tool": "wait", "args": {"seconds": WAIT_S}}]


async def _waited_s(pool: asyncpg.Pool, run_id: uuid.UUID) -> float:
    """What the ``wait`` step of a finished run reports it slept, in seconds."""
    await until(functools.partial(_finished, pool, run_id), timeout_s=30)
    output = await pool.fetchval(
        "SELECT output FROM executor.steps WHERE run_id = $1 AND step_id = 'pause'", run_id
    )
    assert output is not None, "the wait step has no output"
    return float(output["waited_s"])


async def _leases(pool: asyncpg.Pool, run_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT at, payload FROM executor.run_events WHERE run_id = $1 AND type = 'run.leased'"
        " ORDER BY seq",
        run_id,
    )
    return [dict(row) for row in rows]


async def _in_flight(sink: RecordingServer) -> None:
    assert (await asyncio.to_thread(sink.stats))["in_flight"].get("/effects") == 1


async def _finished(pool: asyncpg.Pool, run_id: uuid.UUID) -> str:
    status = (await statuses(pool, [run_id]))[run_id]
    assert status in ("succeeded", "failed"), status
    return status


def _log_clock_offset_s(worker: WorkerProcess) -> float:
    """How far the worker's own log timestamps are from the host clock, in seconds."""
    stamps = [line["timestamp"] for line in worker.lines() if "timestamp" in line]
    assert stamps, worker.log_tail()
    stamp = datetime.fromisoformat(stamps[-1].replace("Z", "+00:00"))
    mtime = worker.log_path.stat().st_mtime  # written by the worker, read on the host clock
    return stamp.timestamp() - mtime


async def _slow_run_kept_by(
    name: str,
    workers: dict[str, WorkerProcess],
    ids: dict[str, str],
    pool: asyncpg.Pool,
    sink: RecordingServer,
) -> uuid.UUID:
    """A slow run leased by ``name``; the others run meanwhile and must not take it."""
    _only(workers, name)
    (run_id,) = await create_runs(pool, [make_plan(slow_post(f"kept-{name}"))])
    await until(lambda: _in_flight(sink), timeout_s=20, interval_s=0.02)
    _all(workers)
    assert await until(lambda: _finished(pool, run_id), timeout_s=30) == "succeeded"
    owners = [lease["payload"]["worker"] for lease in await _leases(pool, run_id)]
    assert owners == [ids[name]], f"{name}'s run was leased by {owners}"
    return run_id


async def test_skewed_workers_neither_steal_nor_strand_leases(
    pool: asyncpg.Pool, sink: RecordingServer, workers: dict[str, WorkerProcess]
) -> None:
    ids = {name: await worker.ready() for name, worker in workers.items()}
    offsets = {name: _log_clock_offset_s(worker) for name, worker in workers.items()}
    assert abs(offsets["normal"]) < 30, offsets
    assert 270 < offsets["ahead"] < 330 and -330 < offsets["behind"] < -270, offsets
    await asyncio.to_thread(sink.slow, "*", SLOW_S)

    kept = [
        await _slow_run_kept_by(name, workers, ids, pool, sink) for name in ("normal", "behind")
    ]

    # The "ahead" worker dies holding a lease: reclaimed after one TTL, not after 5 minutes.
    _only(workers, "ahead")
    (stranded,) = await create_runs(pool, [make_plan(slow_post("stranded"))])
    await until(lambda: _in_flight(sink), timeout_s=20, interval_s=0.02)
    expires = await pool.fetchval(
        "SELECT lease_expires_at - now() FROM executor.runs WHERE run_id = $1", stranded
    )
    assert workers["ahead"].kill() == -9
    killed = time.monotonic()
    _all(workers)
    assert await until(lambda: _finished(pool, stranded), timeout_s=30) == "succeeded"
    reclaimed = (await _leases(pool, stranded))[1]
    reclaim_after_s = (reclaimed["at"] - (await _leases(pool, stranded))[0]["at"]).total_seconds()
    workers["ahead"].start()
    ids["ahead"] = await workers["ahead"].ready()

    # Gates opened by a skewed worker expire on the database clock.
    gate_runs: dict[str, uuid.UUID] = {}
    gate_delays: dict[str, float] = {}
    wait_runs: dict[str, uuid.UUID] = {}
    for name in ("ahead", "behind"):
        _only(workers, name)
        (gate_runs[name], wait_runs[name]) = await create_runs(
            pool, [make_plan(gated(f"gate-{name}")), make_plan(timer())]
        )
        await until(functools.partial(_gate_open, pool, gate_runs[name]), timeout_s=20)
        _all(workers)
    for name, run_id in gate_runs.items():
        assert await until(functools.partial(_finished, pool, run_id), timeout_s=30) == "failed"
        gate_delays[name] = await _gate_delay_s(pool, run_id, ids[name])
    waited = {name: await _waited_s(pool, run_id) for name, run_id in wait_runs.items()}

    run_ids = [*kept, stranded, *gate_runs.values(), *wait_runs.values()]
    events = await events_of(pool, run_ids)
    ends = Counter(e["run_id"] for e in events if e["type"] in ("run.succeeded", "run.failed"))
    log = await asyncio.to_thread(sink.log)
    effects = Counter(e["name"] for e in log if e["outcome"] == "effect")
    print(
        f"\nR17 clock skew: log_clock_offsets_s={ {k: round(v) for k, v in offsets.items()} }"
        f" ttl_s={TTL_S} slow_step_s={SLOW_S} kept_runs_leased_once={len(kept)}"
        f" ahead_lease_expiry_after_claim_s={expires.total_seconds():.2f}"
        f" stranded_reclaimed_after_s={reclaim_after_s:.2f}"
        f" (killed {time.monotonic() - killed:.1f} s ago)"
        f" gate_timeout_s={GATE_S} gate_expired_after_s="
        f"{ {k: round(v, 2) for k, v in gate_delays.items()} }"
        f" wait_{WAIT_S}s_waited_s={ {k: round(v, 2) for k, v in waited.items()} }"
        f" effects={dict(Counter(effects.values()))} run_ends={dict(Counter(ends.values()))}"
    )

    # The lease the "ahead" worker took is TTL long on the database clock, not 5 min + TTL.
    assert 0 < expires.total_seconds() <= TTL_S
    assert reclaim_after_s < SLOW_S + TTL_S + 3, reclaim_after_s
    for delay in gate_delays.values():
        assert GATE_S - 0.05 <= delay < GATE_S + 3, gate_delays
    # A wait lasts its length on a skewed worker too (the step's first start is stored on
    # the database clock and handed to the tool on the host's).
    for seconds in waited.values():
        assert WAIT_S - 0.1 <= seconds <= WAIT_S + 0.5, waited
    assert set(ends.values()) == {1}, ends
    assert set(effects) == {"kept-normal.post", "kept-behind.post", "stranded.post"}
    assert set(effects.values()) == {1}, effects
    histories = await load_histories(pool, run_ids)
    assert_legal(histories, [e["key"] for e in log if e["outcome"] == "effect"])


async def _gate_open(pool: asyncpg.Pool, run_id: uuid.UUID) -> None:
    status = await pool.fetchval(
        "SELECT status FROM executor.steps WHERE run_id = $1 AND step_id = 'approve_me'", run_id
    )
    assert status == "awaiting_approval", status


async def _gate_delay_s(pool: asyncpg.Pool, run_id: uuid.UUID, opener: str) -> float:
    """Seconds from the gate's opening (event time, database clock) to its expiry."""
    rows = await pool.fetch(
        "SELECT e.type, e.at, e.payload, r.wake_at FROM executor.run_events e"
        " JOIN executor.runs r USING (run_id) WHERE e.run_id = $1 ORDER BY e.seq",
        run_id,
    )
    opened = next(r for r in rows if r["type"] == "approval.requested")
    rejected = next(r for r in rows if r["type"] == "approval.rejected")
    lease = next(r for r in rows if r["type"] == "run.leased")
    assert lease["payload"]["worker"] == opener
    deadline = datetime.fromisoformat(opened["payload"]["deadline"])
    # The deadline is the opening time plus the timeout on the database clock (not 5 min
    # off), give or take the claim's round trip.
    assert abs((deadline - opened["at"]).total_seconds() - GATE_S) < 0.5, (deadline, opened)
    assert rejected["payload"].get("by", "system:deadline") == "system:deadline", rejected
    return float((rejected["at"] - opened["at"]).total_seconds())
