"""R18 (RELIABILITY §2): a worker partitioned from Postgres mid-run; a second one takes over.

Worker A reaches Postgres only through a TCP proxy (``support.tcp_proxy``); worker B
connects directly. A leases a run whose second step is a keyed POST the sink answers after
``SLOW_S``. While that call is in flight the proxy black-holes A's traffic for
``PARTITION_S`` (over twice the lease TTL): A's heartbeats and then the commit of the call's
outcome go unanswered. What must happen:

* A finds out by its own timeouts (``db_command_timeout_s``), stops claiming (no
  ``run.leased`` by A during the partition) and, once its lease may have lapsed, lets the run
  go; its lease lapses in the database and B takes the run over and finishes it, sending
  the same call with the same idempotency key (the sink replays its stored answer);
* after the heal, A's stale commit (held by the partition, as TCP would retransmit it, and
  retried by A) changes nothing: every ``slow`` attempt row and the run's end are B's, each
  step succeeded once, the sink made one effect per step, and the history is legal (R16);
* A does not exit, and once healed it does useful work again: B is stopped and A runs a
  fresh run to success.

CI: about 30 s. ``PLANEXEC_CHAOS_SCALE`` = k partitions k runs at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ..e2e.processes import until
from ..support.history import assert_legal, load_histories
from ..support.recording_server import RecordingServer
from ..support.tcp_proxy import TcpProxy
from .conftest import (
    SCALE,
    Spawn,
    WorkerProcess,
    all_finished,
    create_runs,
    events_of,
    make_plan,
)

TTL_S = 3.0
SLOW_S = 1.5
PARTITION_S = 3 * TTL_S
COMMAND_TIMEOUT_S = 1.0
RUNS = SCALE

pytestmark = pytest.mark.timeout(120 + 30 * SCALE)


def via(proxy: TcpProxy, db_url: str) -> str:
    """``db_url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(db_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def partition_steps(tag: str) -> list[dict[str, object]]:
    return [
        {"id": "first", "tool": "sink.effect", "args": {"name": f"{tag}.first", "body": {}}},
        {
            "id": "slow",
            "tool": "sink.effect",
            "depends_on": ["first"],
            "args": {"name": f"{tag}.slow", "body": {"n": 1}},
            "timeout_s": 20,
        },
        {"id": "after", "tool": "noop", "depends_on": ["slow"], "args": {"value": 1}},
    ]


async def _leased_by(pool: asyncpg.Pool, worker: str, run_ids: list[uuid.UUID]) -> int:
    count = await pool.fetchval(
        "SELECT count(DISTINCT run_id) FROM executor.run_events WHERE type = 'run.leased'"
        " AND payload->>'worker' = $1 AND run_id = ANY($2::uuid[])",
        worker,
        run_ids,
    )
    return int(count)


async def test_partitioned_worker_is_fenced_and_recovers(
    pool: asyncpg.Pool, sink: RecordingServer, spawn: Spawn, db_url: str
) -> None:
    upstream = urlsplit(db_url)
    if upstream.hostname is None or upstream.port is None:
        pytest.skip("the test database is not reached over TCP")
    tags = [f"p{i:03d}" for i in range(RUNS)]
    for tag in tags:
        sink.slow(f"{tag}.slow", SLOW_S)
    with TcpProxy(upstream.hostname, upstream.port) as proxy:
        worker_a, worker_b, run_ids = await _a_mid_run(pool, spawn, via(proxy, db_url), tags)
        a_id, b_id = worker_a.ids[-1], worker_b.ids[-1]
        await asyncio.sleep(0.2)  # the slow calls are at the sink now
        proxy.partition()
        cut_at, cut = datetime.now(UTC), time.monotonic()
        try:

            async def taken_over() -> None:
                assert await _leased_by(pool, b_id, run_ids) == RUNS

            await until(taken_over, timeout_s=PARTITION_S)
            await until(
                lambda: all_finished(pool, run_ids, frozenset({"succeeded"})),
                timeout_s=PARTITION_S,
            )
            taken_s = time.monotonic() - cut
            await asyncio.sleep(max(0.0, PARTITION_S - (time.monotonic() - cut)))
            assert worker_a.proc is not None and worker_a.proc.poll() is None
        finally:
            proxy.heal()
        healed_at, healed = datetime.now(UTC), time.monotonic()
        partition_s = healed - cut

        def a_events(*names: str) -> list[dict[str, object]]:
            return [line for line in worker_a.lines() if line.get("event") in names]

        async def a_let_go() -> None:
            # A's driver learnt what became of its stale commit: fenced (lease lost), or
            # the run already where it meant to leave it (B finished it the same way).
            after = [
                line
                for line in a_events("lease_lost", "commit_reconciled")
                if datetime.fromisoformat(str(line["timestamp"])) > healed_at
            ]
            assert {str(line.get("run_id")) for line in after} >= {str(r) for r in run_ids}

        await until(a_let_go, timeout_s=20)
        let_go_s = time.monotonic() - healed

        figures = await _check_fenced(pool, sink, tags, run_ids, (a_id, b_id), (cut_at, healed_at))
        a_log = Counter(
            str(line["event"])
            for line in a_events(
                "claim_failed",
                "claim_recovered",
                "heartbeat_failed",
                "commit_outcome_unknown",
                "commit_reconciled",
                "lease_lost",
            )
        )
        reconciled = Counter(str(line.get("outcome")) for line in a_events("commit_reconciled"))

        # After the heal A works again: with B gone, A runs a fresh run to success.
        worker_b.send(signal.SIGTERM)
        assert await worker_b.wait_exit(timeout_s=15) == 0
        (fresh,) = await create_runs(pool, [make_plan(partition_steps("fresh"))])
        await until(lambda: all_finished(pool, [fresh], frozenset({"succeeded"})), 30)
        resumed_s = time.monotonic() - healed
        assert await _leased_by(pool, a_id, [fresh]) == 1
        print(
            f"\nR18 partition: runs={RUNS} partition_s={partition_s:.1f}"
            f" takeover_s={taken_s:.1f} a_let_go_after_heal_s={let_go_s:.1f}"
            f" a_fresh_run_done_after_heal_s={resumed_s:.1f} a_log={dict(a_log)}"
            f" reconciled={dict(reconciled)} held_bytes={proxy.held_bytes}"
            f" delivered_late_bytes={proxy.delivered_late_bytes} {figures}"
        )

    assert a_log["claim_failed"] > 0 and a_log["heartbeat_failed"] > 0, a_log
    assert reconciled == {"lost": RUNS}, reconciled  # the stale commits were fenced
    log = await asyncio.to_thread(sink.log)
    keys = [e["key"] for e in log if e["outcome"] == "effect"]
    assert_legal(await load_histories(pool, [*run_ids, fresh]), keys)
    assert worker_a.proc is not None and worker_a.proc.poll() is None, worker_a.log_tail()
    worker_a.send(signal.SIGTERM)
    assert await worker_a.wait_exit(timeout_s=15) == 0, worker_a.log_tail()


async def _check_fenced(
    pool: asyncpg.Pool,
    sink: RecordingServer,
    tags: list[str],
    run_ids: list[uuid.UUID],
    workers: tuple[str, str],
    window: tuple[datetime, datetime],
) -> str:
    """Assert that the partitioned worker A wrote nothing the takeover did not; figures."""
    a_id, b_id = workers
    cut_at, healed_at = window
    # A leased nothing while partitioned; every slow attempt and the end are B's.
    a_claims_cut = await pool.fetchval(
        "SELECT count(*) FROM executor.run_events WHERE type = 'run.leased'"
        " AND payload->>'worker' = $1 AND at BETWEEN $2 AND $3",
        a_id,
        cut_at,
        healed_at,
    )
    attempts = await pool.fetch(
        "SELECT step_id, worker, status FROM executor.attempts WHERE run_id = ANY($1)",
        run_ids,
    )
    events = await events_of(pool, run_ids)
    writes_after_heal = [e for e in events if e["at"] > healed_at]
    stats = await asyncio.to_thread(sink.stats)
    log = await asyncio.to_thread(sink.log)
    slow_requests = Counter(e["name"] for e in log if e["name"].endswith(".slow"))
    assert a_claims_cut == 0, "A leased a run while partitioned"
    assert {a["worker"] for a in attempts if a["step_id"] == "slow"} == {b_id}, attempts
    assert {a["worker"] for a in attempts if a["step_id"] == "first"} == {a_id}
    # The stale writes A tried after the heal changed nothing: no event was added then.
    assert writes_after_heal == [], writes_after_heal
    succeeded = Counter(
        (e["run_id"], e["step_id"]) for e in events if e["type"] == "step.succeeded"
    )
    assert set(succeeded.values()) == {1} and len(succeeded) == 3 * RUNS, succeeded
    assert {e["run_id"] for e in events if e["type"] == "run.succeeded"} == set(run_ids)
    assert stats["effects"] == 2 * RUNS, stats
    assert all(slow_requests[f"{tag}.slow"] == 2 for tag in tags), slow_requests
    return (
        f"slow_requests={dict(slow_requests)} effects={stats['effects']}"
        f" replayed={stats['replayed']} writes_after_heal={len(writes_after_heal)}"
    )


async def _a_mid_run(
    pool: asyncpg.Pool, spawn: Spawn, proxied_url: str, tags: list[str]
) -> tuple[WorkerProcess, WorkerProcess, list[uuid.UUID]]:
    """Start A (through the proxy) and B; A leases the runs and is in their slow call."""
    settings = {
        "lease_ttl_s": TTL_S,
        "db_command_timeout_s": COMMAND_TIMEOUT_S,
        "db_connect_timeout_s": COMMAND_TIMEOUT_S,
    }
    worker_a = spawn(
        "a",
        concurrency=RUNS + 1,  # a free slot: A keeps trying to claim while cut off
        step_concurrency=RUNS,
        database_url=proxied_url,
        **settings,
    )
    worker_b = spawn("b", concurrency=RUNS, step_concurrency=RUNS, **settings)
    a_id = await worker_a.ready()
    await worker_b.ready()
    worker_b.send(signal.SIGSTOP)  # so that A leases the runs
    try:
        run_ids = await create_runs(pool, [make_plan(partition_steps(tag)) for tag in tags])

        async def leased_by_a() -> None:
            assert await _leased_by(pool, a_id, run_ids) == RUNS

        await until(leased_by_a, timeout_s=20)
    finally:
        worker_b.send(signal.SIGCONT)

    async def slow_in_flight() -> None:
        done = await pool.fetchval(
            "SELECT count(*) FROM executor.run_events WHERE type = 'step.succeeded'"
            " AND step_id = 'first' AND run_id = ANY($1::uuid[])",
            run_ids,
        )
        assert done == RUNS, f"{done} of {RUNS} first steps done"

    await until(slow_in_flight, timeout_s=20)
    return worker_a, worker_b, run_ids
