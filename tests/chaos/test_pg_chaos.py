"""R11 (RELIABILITY §2): restart Postgres again and again under two workers and many runs.

A throwaway cluster (``support.pg_cluster``; never the shared server) is migrated and two
``planexec worker`` processes drive runs on it. Runs are created at a steady rate while the
server is stopped (``pg_ctl stop -m fast``: every connection is cut), kept down 0-2 s and
started again at random intervals. Each run has a noop or transform step, a keyed POST to the
recording sink (``sink.effect``, idempotent), for half of them a non-idempotent POST
(``sink.effect_unsafe``: every request is a new effect) and for some a short timer.

What is correct:

* a run may end ``needs_attention`` only when a non-idempotent call's outcome is truly
  unknown: its lease holder lost the lease mid-call, out of touch with the database for a
  whole TTL (4 s). Every outage here is shorter (0-2 s down plus about 0.3 s to stop and
  start), so no lease has to lapse and every run must succeed; no driver may crash (a crash
  lets the lease lapse and turns an in-flight unsafe call into an unknown one);
* the sink made exactly one effect per (run, step) of each succeeded run, never two for
  any step (a commit of unknown outcome that was resent would show as a duplicate event,
  a retried non-idempotent call as a second effect);
* the histories pass the R16 checker;
* neither worker process exits, and work resumes after every restart (reconnect time:
  from the server accepting connections again to the next event a worker commits);
* after quiesce, 2 x TTL later, no run is running or pending, no step is running and no
  lease is held.

CI: restarts every 3-8 s for 50 s under 300 runs. ``PLANEXEC_CHAOS_SCALE`` = k runs k
times as long with k times as many runs, and with k > 1 the RELIABILITY intervals (restart
every 5-40 s); k = 36 is the nightly target (30 min of restarts, 10,800 runs).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from executor_service.store.runs import AttemptWrite, Batch, EventWrite, RunStore, StepRow
from planexec.db import upgrade
from planexec.db.pg import create_pool, is_transient
from shared_schemas import PolicyDecision

from ..e2e.processes import until
from ..support import pg_cluster
from ..support.history import assert_legal, load_histories
from ..support.recording_server import RecordingServer
from .conftest import SCALE, WorkerProcess, create_runs, make_plan, spawner

TTL_S = 4.0
WORKERS = 2
CHAOS_S = 50.0 * SCALE
RUNS = 300 * SCALE
INTERVAL_S = (3.0, 8.0) if SCALE == 1 else (5.0, 40.0)
DOWN_S = (0.0, 2.0)
FINISHED = frozenset({"succeeded", "failed", "cancelled", "needs_attention", "dead_letter"})
T = TypeVar("T")

pytestmark = [
    pytest.mark.timeout(240 + 90 * SCALE),
    pytest.mark.skipif(not pg_cluster.available(), reason="initdb/pg_ctl not installed"),
]


@pytest.fixture
def cluster() -> Iterator[pg_cluster.PgCluster]:
    """A private, restartable Postgres (never the shared server)."""
    with pg_cluster.PgCluster() as server:
        yield server


async def retrying(call: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    """``call()``, again after transient database errors (the test's own statements)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def chaos_steps(i: int, tag: str) -> list[dict[str, Any]]:
    """A small run: noop or transform, a keyed POST; an unsafe POST and a timer for some."""
    first: dict[str, Any] = (
        {"id": "shape", "tool": "noop", "args": {"value": {"i": i}}}
        if i % 2
        else {
            "id": "shape",
            "tool": "transform",
            "args": {"data": {"i": i}, "expression": "{n: i}"},
        }
    )
    steps = [
        first,
        {
            "id": "keyed",
            "tool": "sink.effect",
            "depends_on": ["shape"],
            "args": {"name": f"{tag}.keyed", "body": {"i": i}},
        },
    ]
    if i % 2 == 0:
        steps.append(
            {
                "id": "unsafe",
                "tool": "sink.effect_unsafe",
                "depends_on": ["shape"],
                "args": {"name": f"{tag}.unsafe", "body": {"i": i}},
            }
        )
    if i % 3 == 0:
        steps.append(
            {"id": "pause", "tool": "wait", "depends_on": ["keyed"], "args": {"seconds": 0.5}}
        )
    return steps


async def test_runs_survive_postgres_restarts(
    cluster: pg_cluster.PgCluster, sink: RecordingServer, catalog: Path, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(cluster.url())
    await admin.execute("CREATE DATABASE planexec")
    await admin.close()
    url = cluster.url("planexec")
    await asyncio.to_thread(upgrade, url)
    pool = await create_pool(url, max_size=4, command_timeout_s=10, connect_timeout_s=5)
    workers: list[WorkerProcess] = []
    spawn = spawner(url, catalog, tmp_path, workers)
    try:
        for n in range(WORKERS):
            spawn(
                f"w{n}",
                concurrency=16,
                lease_ttl_s=TTL_S,
                db_command_timeout_s=5,
                db_connect_timeout_s=3,
            )
        for worker in workers:
            await worker.ready()
        figures = await _chaos(cluster, pool, workers)
        run_ids: list[uuid.UUID] = figures["run_ids"]

        async def finished() -> dict[uuid.UUID, str]:
            rows = await pool.fetch(
                "SELECT run_id, status FROM executor.runs WHERE run_id = ANY($1::uuid[])",
                run_ids,
            )
            current = {row["run_id"]: row["status"] for row in rows}
            waiting = [s for s in current.values() if s not in FINISHED]
            assert not waiting, f"{len(waiting)} runs unfinished: {Counter(waiting)}"
            return current

        quiet_from = time.monotonic()
        final = await until(finished, timeout_s=90)
        quiesce_s = time.monotonic() - quiet_from
        await asyncio.sleep(2 * TTL_S)
        await _check_end_state(pool, workers, run_ids, final, sink, figures, quiesce_s)
    finally:
        await pool.close()
        for worker in workers:
            worker.cleanup()


async def _chaos(
    cluster: pg_cluster.PgCluster, pool: asyncpg.Pool, workers: list[WorkerProcess]
) -> dict[str, Any]:
    """Feed runs and restart the server until ``CHAOS_S`` passed and every run exists."""
    run_ids: list[uuid.UUID] = []
    restarts: list[tuple[datetime, float]] = []  # (server up again, wall clock), down seconds
    rng = random.Random()
    store = RunStore(pool)
    start = time.monotonic()

    async def feed() -> None:
        """Create the runs evenly over 90 % of ``CHAOS_S``, two batches a second."""
        per_tick = max(1, round(RUNS / (0.9 * CHAOS_S / 0.5)))
        i = 0
        while i < RUNS:
            await asyncio.sleep(max(0.0, start + 0.9 * CHAOS_S * i / RUNS - time.monotonic()))
            batch = [
                make_plan(chaos_steps(j, f"c{j:05d}")) for j in range(i, min(RUNS, i + per_tick))
            ]
            for plan in batch:  # run creation is idempotent per plan version: retry freely
                decisions = [
                    PolicyDecision(step_id=s.id, tool=s.tool, decision="allow") for s in plan.steps
                ]
                run_id, _ = await retrying(
                    lambda p=plan, d=decisions: store.create_run(p, d, created_by=p.created_by)  # type: ignore[misc]
                )
                run_ids.append(run_id)
            i += len(batch)

    async def restart_loop(fed: asyncio.Task[None]) -> None:
        while time.monotonic() - start < CHAOS_S or not fed.done():
            await asyncio.sleep(rng.uniform(*INTERVAL_S))
            down_s = rng.uniform(*DOWN_S)
            down, up = await asyncio.to_thread(cluster.restart, down_s)
            restarts.append((datetime.now(UTC), up - down))
            for worker in workers:
                assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()

    fed = asyncio.create_task(feed())
    await restart_loop(fed)
    await fed
    return {"run_ids": run_ids, "restarts": restarts, "chaos_s": time.monotonic() - start}


async def _reconnect_times(pool: asyncpg.Pool, ups: list[datetime]) -> list[float]:
    """Seconds from each restart to the first event a worker committed after it."""
    out = []
    for up in ups:
        first = await pool.fetchval(
            "SELECT min(at) FROM executor.run_events WHERE at > $1"
            " AND type IN ('run.leased', 'step.succeeded', 'step.started', 'run.succeeded')",
            up,
        )
        if first is not None:
            out.append((first - up).total_seconds())
    return out


async def _check_end_state(
    pool: asyncpg.Pool,
    workers: list[WorkerProcess],
    run_ids: list[uuid.UUID],
    final: dict[uuid.UUID, str],
    sink: RecordingServer,
    figures: dict[str, Any],
    quiesce_s: float,
) -> None:
    stats = await asyncio.to_thread(sink.stats)
    log = await asyncio.to_thread(sink.log)
    histories = await load_histories(pool, run_ids)
    by_run = {h.run_id: h for h in histories}
    tags = {
        row["run_id"]: row["tag"]
        for row in await pool.fetch(
            "SELECT run_id, plan->'steps'->1->'args'->>'name' AS tag FROM executor.runs"
            " WHERE run_id = ANY($1::uuid[])",
            run_ids,
        )
    }
    effects: dict[str, int] = stats["effects_by_name"]
    duplicates = sum(n - 1 for n in effects.values() if n > 1)
    statuses = Counter(final.values())
    ups = [up for up, _ in figures["restarts"]]
    reconnect = await _reconnect_times(pool, ups)
    recovered = {
        str(w.name): Counter(
            line["event"]
            for line in w.lines()
            if line["event"]
            in {"claim_failed", "claim_recovered", "commit_outcome_unknown", "commit_reconciled"}
            | {"heartbeat_failed", "driver_crashed", "lease_lost"}
        )
        for w in workers
    }
    recoveries = await pool.fetchval(
        "SELECT count(*) FROM executor.run_events WHERE type = 'run.leased'"
        " AND (payload->>'recovered')::boolean AND run_id = ANY($1::uuid[])",
        run_ids,
    )
    reconciled = Counter(
        str(line.get("outcome"))
        for w in workers
        for line in w.lines()
        if line["event"] == "commit_reconciled"
    )
    print(
        f"\nR11 pg chaos: restarts={len(ups)} chaos_s={figures['chaos_s']:.1f}"
        f" down_s(max)={max((d for _, d in figures['restarts']), default=0):.2f}"
        f" runs={len(run_ids)} statuses={dict(statuses)} effects={stats['effects']}"
        f" duplicates={duplicates} quiesce_s={quiesce_s:.1f}"
        f" reconnect_s(median/max)="
        f"{statistics.median(reconnect) if reconnect else 0:.2f}/{max(reconnect, default=0):.2f}"
        f" recovered_claims={recoveries} reconciled_commits={dict(reconciled)}"
        f" worker_events={recovered}"
    )
    assert len(ups) >= 3, "too few restarts to mean anything"
    for worker in workers:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    assert len(run_ids) == RUNS == len(final)

    # A non-idempotent call's outcome is unknown only when its lease holder lost the lease
    # mid-call: out of touch with the database for a whole TTL. Every outage here is shorter
    # (0-2 s down plus the stop and start), so no lease had to lapse: every run succeeds.
    assert max(d for _, d in figures["restarts"]) + 1.0 < TTL_S
    wrong: list[str] = []
    for run_id, status in final.items():
        tag = tags[run_id].rsplit(".", 1)[0]
        history = by_run[str(run_id)]
        if status != "succeeded":
            events = sorted(history.events, key=lambda e: int(e["seq"]))
            wrong.append(f"{run_id} ended {status}: {[e['type'] for e in events]}")
        for step in {str(s) for s in history.depends_on} & {"keyed", "unsafe"}:
            if effects.get(f"{tag}.{step}", 0) != 1:
                wrong.append(f"{run_id} {step}: {effects.get(f'{tag}.{step}', 0)} effects")
    assert not wrong, wrong[:10]
    assert duplicates == 0, {k: n for k, n in effects.items() if n > 1}
    crashed = [line for w in workers for line in w.lines() if line["event"] == "driver_crashed"]
    assert crashed == [], crashed[:5]
    keys = [e["key"] for e in log if e["outcome"] == "effect"]
    assert_legal(histories, keys)
    # Every restart was followed by progress (the pools reconnected) within a bound.
    assert reconnect and max(reconnect) < 15.0, reconnect
    # Quiesced, two TTLs later: nothing runs, nothing pends, no lease is held.
    left = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE status IN ('running', 'pending')) AS active,"
        " count(*) FILTER (WHERE lease_token IS NOT NULL) AS leased"
        " FROM executor.runs WHERE run_id = ANY($1::uuid[])",
        run_ids,
    )
    running_steps = await pool.fetchval(
        "SELECT count(*) FROM executor.steps WHERE status = 'running' AND run_id = ANY($1)",
        run_ids,
    )
    assert (left["active"], left["leased"], running_steps) == (0, 0, 0), dict(left)


class _LosingPool:
    """A real pool whose next ``fetchrow`` loses its connection: before the statement is
    sent (``after=False``) or after it ran, before its answer arrived (``after=True``)."""

    def __init__(self, pool: asyncpg.Pool, *, after: bool) -> None:
        self._pool = pool
        self._after = after
        self.lost = 0

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        if self.lost == 0:
            self.lost += 1
            if self._after:
                await self._pool.fetchrow(sql, *args)
            raise ConnectionResetError(104, "Connection reset by peer")
        return await self._pool.fetchrow(sql, *args)


@pytest.mark.parametrize("after", [False, True], ids=["lost_before", "lost_after_commit"])
async def test_a_commit_of_unknown_outcome_is_written_exactly_once(
    pool: asyncpg.Pool, after: bool
) -> None:
    """The store's answer to a broken connection mid-commit: read back, resend only if lost.

    ``lost_after_commit`` is the case a blind retry gets wrong (the batch's events twice).
    """
    (run_id,) = await create_runs(
        pool, [make_plan([{"id": "only", "tool": "noop", "args": {"value": 1}}])]
    )
    [claimed] = await RunStore(pool).claim_runs("w-unknown", limit=1, ttl_s=30)
    row = StepRow.from_json(claimed.steps[0])
    row.status, row.attempts = "running", 1
    now = datetime.now(UTC)
    batch = Batch(
        steps={"only": row},
        attempts=[AttemptWrite("only", 1, "k-1", "started", now)],
        events=[EventWrite("step.started", "only", 1, {"idempotency_key": "k-1"})],
    )
    losing = _LosingPool(pool, after=after)
    result = await RunStore(losing).commit(  # type: ignore[arg-type,unused-ignore]
        run_id, claimed.lease_token, "w-unknown", batch
    )
    assert result.fenced and losing.lost == 1
    started = await pool.fetchval(
        "SELECT count(*) FROM executor.run_events WHERE run_id = $1 AND type = 'step.started'",
        run_id,
    )
    attempts = await pool.fetchval(
        "SELECT count(*) FROM executor.attempts WHERE run_id = $1", run_id
    )
    assert (started, attempts) == (1, 1)
    # The next commit follows on: the run's event sequence has no gap and no repeat.
    more = Batch(events=[EventWrite("run.released", payload={"worker": "w-unknown"})])
    more.release = True
    assert (await RunStore(pool).commit(run_id, claimed.lease_token, "w-unknown", more)).fenced
    seqs = [
        r["seq"]
        for r in await pool.fetch(
            "SELECT seq FROM executor.run_events WHERE run_id = $1 ORDER BY seq", run_id
        )
    ]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 4, seqs
