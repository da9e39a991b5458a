"""Load tests L1 and L2 (RELIABILITY §2): worker processes under sustained load and a backlog.

Everything is real and on this machine: ``planexec worker`` processes (``python -m
planexec.cli worker``) on a fresh database of the bench Postgres, runs created directly in the
store (``RunStore.create_run``, the statement dispatch runs), and figures read back from the
``runs``, ``steps`` and ``run_events`` tables and from ``pg_stat_activity``.

L1, sustained load: an open-loop generator offers ``rate`` runs/s of ``steps``-step sequential
plans for ``duration_s`` seconds (bounded in count and time); every step is the built-in
``wait`` tool sleeping ``tool_s`` seconds (50 ms: the "mock tools 50 ms" of RELIABILITY).
Measured: steps/s finished while the load is offered, claim-to-start latency (run creation,
``runs.created_at``, to its first step's start, ``steps.first_started_at``) and
create-to-lease latency (to the ``run.leased`` event), lost runs (created runs that did not
succeed before the drain deadline), and the connections each worker process holds
(``pg_stat_activity`` rows of the bench database, attributed to a process by matching
``client_port`` with the process's sockets) against the bound its pool settings allow.

L2, backlog drain: ``runs`` ten-step runs of ``noop`` steps are queued once (in a template
database, held back with a far ``wake_at``), then each fleet of 1, 2, 4 ... workers drains an
identical copy: all workers are started and ready before the backlog is released in one
statement, and the drain time runs from that release to the last run's ``finished_at``. The
sampler records the longest heavyweight-lock wait it sees (``wait_event_type = 'Lock'``,
bounded above by the time since the statement began); table sizes and dead tuples of the
executor tables are read after the drain and again after a plain ``VACUUM``.

L1 has three parts: the same ``rate`` offered to 1, 2 and 4 workers (is it held? at what
latency and connection count?); each fleet overloaded (``overload`` runs/s for half as long):
the steps/s it finishes then is its capacity; and a ladder of rates with 2 workers, stopped at
the first rate not held, which brackets where this machine saturates.

Environment (bigger runs than ``make bench``'s defaults):

- ``PLANEXEC_BENCH_L1_RATE`` runs/s offered to every fleet (default 30).
- ``PLANEXEC_BENCH_L1_SECONDS`` seconds each load phase lasts (default 12).
- ``PLANEXEC_BENCH_L1_WORKERS`` fleets to compare (default ``1,2,4``).
- ``PLANEXEC_BENCH_L1_OVERLOAD_RATE`` runs/s offered to measure capacity (default 200).
- ``PLANEXEC_BENCH_L1_LADDER`` comma-separated runs/s tried with
  ``PLANEXEC_BENCH_L1_LADDER_WORKERS`` (default 2) workers (default ``60,90,120,150``;
  empty = skip).
- ``PLANEXEC_BENCH_L2_RUNS`` queued ten-step runs (default 3000 = 30,000 steps).
- ``PLANEXEC_BENCH_L2_WORKERS`` fleets to compare (default ``1,2,4``).
- ``PLANEXEC_BENCH_L2_CONCURRENCY`` runs each draining worker drives at once (default 16).
- ``PLANEXEC_BENCH_L2_SETUP_SQL`` a statement run on the backlog before the drains (to try an
  index without a migration); it is recorded in the figures.

Run alone: ``python -m bench.executor_load [l1|l2]`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]

from executor_service.settings import ExecutorSettings
from executor_service.store.runs import RunStore
from planexec.db import upgrade
from planexec.db.pg import create_pool
from shared_schemas import Plan, PlannerInfo, PolicyDecision, Step, seal

ROOT = Path(__file__).resolve().parents[1]
SIGNING_KEY = "l" * 40
TERMINAL = ("succeeded", "failed", "cancelled", "needs_attention")
HELD_P99_MS = 250.0
"""Claim-to-start p99 a held rate must stay under: RELIABILITY L1's pass criterion."""


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_list(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` in (0, 100] of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def database_url(admin_dsn: str, name: str) -> str:
    """``admin_dsn`` (``postgresql://user@host:port/db``) with the database ``name``."""
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


# --- plans -------------------------------------------------------------------------------


def sequential_plan(steps: int, tool: str, args: dict[str, Any], tenant: str = "load") -> Plan:
    """A sealed version-1 plan of ``steps`` steps ``s0 -> s1 -> ...`` calling ``tool``."""
    plan = Plan(
        plan_id=uuid.uuid4(),
        version=1,
        intent="load test",
        tenant=tenant,
        created_by=f"{tenant}-bench",
        steps=[
            Step(id=f"s{i}", tool=tool, args=args, depends_on=[f"s{i - 1}"] if i else [])
            for i in range(steps)
        ],
        catalog_version="sha256:" + "0" * 64,
        policy_version="sha256:" + "0" * 64,
        planner=PlannerInfo(backend="draft"),
    )
    return seal(plan, SIGNING_KEY.encode())


def _decisions(plan: Plan) -> list[PolicyDecision]:
    return [PolicyDecision(step_id=s.id, tool=s.tool, decision="allow") for s in plan.steps]


# --- the generator -----------------------------------------------------------------------


@dataclass
class Offered:
    """What the generator offered.

    Attributes:
        run_ids: the created runs, in creation order.
        seconds: wall time from the first scheduled creation to the last creation.
        lag_p99_ms: p99 of (actual - scheduled) creation time: the generator's own lateness.
    """

    run_ids: list[uuid.UUID]
    seconds: float
    lag_p99_ms: float

    @property
    def rate(self) -> float:
        """Runs/s actually offered."""
        return len(self.run_ids) / self.seconds if self.seconds > 0 else 0.0


async def offer_runs(
    pool: asyncpg.Pool, plans: Sequence[Plan], rate: float, *, parallel: int = 8
) -> Offered:
    """Create one run per plan at ``rate`` runs/s (open loop: on schedule, not on completion).

    Creation ``i`` is scheduled at ``start + i / rate``; at most ``parallel`` creations are in
    flight, so a generator that cannot keep up shows as lag, not as an unbounded task pile.
    """
    store = RunStore(pool)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    ids: list[uuid.UUID | None] = [None] * len(plans)
    lags: list[float] = []

    async def one(i: int, plan: Plan, scheduled: float) -> None:
        async with gate:
            lags.append(loop.time() - scheduled)
            run_id, created = await store.create_run(
                plan, _decisions(plan), created_by=plan.created_by
            )
        assert created
        ids[i] = run_id

    start = loop.time()
    tasks = []
    for i, plan in enumerate(plans):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, plan, scheduled)))
    await asyncio.gather(*tasks)
    seconds = loop.time() - start
    return Offered(
        [i for i in ids if i is not None], seconds, round(percentile(lags, 99) * 1000, 1)
    )


# --- connections and lock waits ----------------------------------------------------------


@dataclass
class ActivitySampler:
    """Samples ``pg_stat_activity`` of one database every ``every_s`` seconds.

    Connections are attributed to a process by their ``client_port`` (a local TCP port of
    that process, read with psutil); the rest count as ``other``. Lock waits are backends
    with ``wait_event_type = 'Lock'`` (heavyweight locks: row, tuple and transaction locks);
    a wait's length is bounded above by the time since its statement began.
    """

    admin_dsn: str
    dbname: str
    pids: dict[str, int] = field(default_factory=dict)
    every_s: float = 0.05
    max_by_process: dict[str, int] = field(default_factory=dict)
    max_total: int = 0
    lock_wait_samples: int = 0
    longest_lock_wait_s: float = 0.0
    samples: int = 0
    _task: asyncio.Task[None] | None = None
    _running: bool = False
    _cpu: dict[int, float] = field(default_factory=dict)

    def _ports(self) -> dict[int, str]:
        ports: dict[int, str] = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.laddr:
                        ports[conn.laddr.port] = name
        return ports

    async def _loop(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            while self._running:
                rows = await conn.fetch(
                    "SELECT pid, client_port, wait_event_type = 'Lock' AS waiting,"
                    " extract(epoch FROM clock_timestamp() - state_change) AS s"
                    " FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
                    self.dbname,
                )
                ports = self._ports()
                counts: dict[str, int] = {}
                for row in rows:
                    owner = ports.get(row["client_port"], "other")
                    if owner != "other":
                        self._backend_cpu(row["pid"])
                    counts[owner] = counts.get(owner, 0) + 1
                    if row["waiting"]:
                        self.lock_wait_samples += 1
                        self.longest_lock_wait_s = max(self.longest_lock_wait_s, float(row["s"]))
                for owner, count in counts.items():
                    self.max_by_process[owner] = max(self.max_by_process.get(owner, 0), count)
                self.max_total = max(self.max_total, len(rows))
                self.samples += 1
                await asyncio.sleep(self.every_s)
        finally:
            await conn.close()

    def _backend_cpu(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            self._cpu[pid] = times.user + times.system

    @property
    def backend_cpu_s(self) -> float:
        """CPU seconds the workers' server backends had used at their last sample.

        A backend's CPU after its last sample (at most ``every_s``) is not counted; a
        backend that lived less than ``every_s`` may be missed.
        """
        return sum(self._cpu.values())

    def start(self) -> None:
        """Start sampling in a task of the running loop."""
        self._running = True
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop sampling (re-raises a failure of the sampling task)."""
        self._running = False
        if self._task is not None:
            await self._task

    def workers_max(self) -> int:
        """Most connections one worker process held in any sample."""
        return max((v for k, v in self.max_by_process.items() if k != "other"), default=0)


def connection_bound(settings: ExecutorSettings) -> dict[str, int]:
    """Connections one ``planexec worker`` process may open, from its settings.

    ``executor_service/worker_main.py``: an asyncpg pool of ``db_pool_size`` (every statement
    of the engine), one LISTEN connection for run wake-ups (``planexec.db.notify.Notifier``)
    and, only when tool concurrency caps are configured, one more for slot grants
    (``executor_service.engine.slots``).
    """
    pool = settings.db_pool_size
    capped = bool(settings.tool_concurrency or settings.tenant_tool_concurrency)
    listen = 1 + int(capped)
    return {"asyncpg_pool": pool, "listen": listen, "per_process": pool + listen}


# --- worker processes --------------------------------------------------------------------


def catalog_config(directory: Path) -> Path:
    """A worker catalog of the built-ins ``wait`` and ``noop``."""
    path = directory / "catalog.json"
    path.write_text(json.dumps({"builtins": ["wait", "noop", "transform"]}))
    return path


def worker_env(db_url: str, catalog: Path, **settings: Any) -> dict[str, str]:
    """Environment of a bench worker: the parent's minus ``PLANEXEC_*``, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANEXEC_")}
    env |= {
        "PLANEXEC_DATABASE_URL": db_url,
        "PLANEXEC_ENV": "test",
        "PLANEXEC_SIGNING_KEY": SIGNING_KEY,
        "PLANEXEC_LOG_LEVEL": "info",
        "PLANEXEC_CATALOG_CONFIG": str(catalog),
    }
    env |= {f"PLANEXEC_{k.upper()}": str(v) for k, v in settings.items()}
    return env


class Fleet:
    """``count`` worker processes on one database; each logs to its own file."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path, concurrency: int) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        for i in range(count):
            name = f"worker{i + 1}"
            self.logs[name] = log_dir / f"{name}.log"
            with self.logs[name].open("wb") as log:
                self.procs[name] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "planexec.cli",
                        "worker",
                        "--concurrency",
                        f"{concurrency}",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    @property
    def pids(self) -> dict[str, int]:
        """Process name -> pid."""
        return {name: proc.pid for name, proc in self.procs.items()}

    async def ready(self, timeout_s: float = 90.0) -> None:
        """Wait until every worker logged ``worker_ready``.

        Raises:
            RuntimeError: a worker exited, or the timeout passed.
        """
        deadline = time.monotonic() + timeout_s
        waiting = set(self.procs)
        while waiting:
            for name in list(waiting):
                if self.procs[name].poll() is not None:
                    tail = self.logs[name].read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited: {tail}")
                if '"worker_ready"' in self.logs[name].read_text(errors="replace"):
                    waiting.discard(name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready: {sorted(waiting)}")
            await asyncio.sleep(0.1)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the running workers have used so far."""
        total = 0.0
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(proc.pid).cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        """SIGTERM every worker, wait, SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def errors(self) -> list[str]:
        """Log lines at level error (a crashed driver, a dead-lettered run)."""
        out = []
        for path in self.logs.values():
            for raw in path.read_text(errors="replace").splitlines():
                if '"level": "error"' in raw or '"level":"error"' in raw:
                    out.append(raw[:300])
        return out


# --- databases ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_database(
    admin_dsn: str, prefix: str, *, template: str | None = None
) -> AsyncIterator[tuple[str, str]]:
    """A fresh database (migrated, or a copy of ``template``); yields ``(name, url)``."""
    name = f"planexec_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await admin.close()
    url = database_url(admin_dsn, name)
    try:
        if template is None:
            await asyncio.to_thread(upgrade, url)
        yield name, url
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def wait_finished(
    pool: asyncpg.Pool, run_ids: Sequence[uuid.UUID] | None, timeout_s: float
) -> float:
    """Poll until every run is terminal or ``timeout_s`` passed; returns the seconds waited.

    ``run_ids=None``: every run of the database, counted on the ``runs_runnable`` index.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if run_ids is None:
            left = await pool.fetchval(
                "SELECT count(*) FROM executor.runs"
                " WHERE status IN ('pending', 'running', 'paused')"
            )
        else:
            left = await pool.fetchval(
                "SELECT count(*) FROM executor.runs WHERE run_id = ANY($1::uuid[])"
                " AND status <> ALL($2::text[])",
                list(run_ids),
                list(TERMINAL),
            )
        if left == 0:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def run_figures(pool: asyncpg.Pool, run_ids: Sequence[uuid.UUID]) -> dict[str, Any]:
    """Per-run latencies and statuses of ``run_ids`` from the database (times in ms).

    Returns ``{"runs", "statuses", "lost", "claim_to_start_ms": {p50, p99, max},
    "create_to_lease_ms": {p50, p99}, "run_ms": {p50, p99}, "steps_succeeded",
    "first_created", "last_finished"}``. A lost run is one created and not ``succeeded``.
    """
    rows = await pool.fetch(
        """
        SELECT r.run_id, r.status, r.created_at, r.finished_at,
            (SELECT min(e.at) FROM executor.run_events e
             WHERE e.run_id = r.run_id AND e.type = 'run.leased') AS leased_at,
            (SELECT min(s.first_started_at) FROM executor.steps s
             WHERE s.run_id = r.run_id) AS started_at,
            (SELECT count(*) FROM executor.steps s
             WHERE s.run_id = r.run_id AND s.status = 'succeeded') AS steps_ok
        FROM executor.runs r WHERE r.run_id = ANY($1::uuid[])
        """,
        list(run_ids),
    )
    statuses: dict[str, int] = {}
    start_ms: list[float] = []
    lease_ms: list[float] = []
    run_ms: list[float] = []
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        if row["started_at"] is not None:
            start_ms.append((row["started_at"] - row["created_at"]).total_seconds() * 1000)
        if row["leased_at"] is not None:
            lease_ms.append((row["leased_at"] - row["created_at"]).total_seconds() * 1000)
        if row["finished_at"] is not None:
            run_ms.append((row["finished_at"] - row["created_at"]).total_seconds() * 1000)
    finished = [r["finished_at"] for r in rows if r["finished_at"] is not None]
    return {
        "runs": len(run_ids),
        "statuses": statuses,
        "lost": len(run_ids) - statuses.get("succeeded", 0),
        "claim_to_start_ms": {
            "p50": round(percentile(start_ms, 50), 1),
            "p99": round(percentile(start_ms, 99), 1),
            "max": round(max(start_ms, default=0.0), 1),
        },
        "create_to_lease_ms": {
            "p50": round(percentile(lease_ms, 50), 1),
            "p99": round(percentile(lease_ms, 99), 1),
        },
        "run_ms": {
            "p50": round(percentile(run_ms, 50), 1),
            "p99": round(percentile(run_ms, 99), 1),
        },
        "steps_succeeded": sum(int(r["steps_ok"]) for r in rows),
        "first_created": min((r["created_at"] for r in rows), default=None),
        "last_finished": max(finished, default=None),
    }


async def steps_per_s(pool: asyncpg.Pool, since: Any, until: Any) -> float:
    """Steps that finished between two database times, per second."""
    count = await pool.fetchval(
        "SELECT count(*) FROM executor.steps WHERE finished_at >= $1 AND finished_at < $2",
        since,
        until,
    )
    seconds = (until - since).total_seconds()
    return round(int(count) / seconds, 1) if seconds > 0 else 0.0


# --- L1 ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPhase:
    """One L1 phase: ``workers`` processes, ``rate`` runs/s for ``duration_s`` seconds.

    Attributes:
        concurrency: runs each worker drives at once (``--concurrency``).
        step_concurrency: tool calls each worker makes at once (``PLANEXEC_STEP_CONCURRENCY``).
        pool_size, max_overflow: each worker's ``PLANEXEC_DB_POOL_SIZE`` / ``_MAX_OVERFLOW``.
        drain_timeout_s: how long after the last creation every run must be finished, else
            it counts as lost.
    """

    workers: int
    rate: float
    duration_s: float
    steps: int = 10
    tool_s: float = 0.05
    concurrency: int = 64
    step_concurrency: int = 64
    pool_size: int = 10
    max_overflow: int = 5
    drain_timeout_s: float = 60.0


async def load_phase(admin_dsn: str, phase: LoadPhase) -> dict[str, Any]:
    """Run one L1 phase on a fresh database; figures as documented in the module."""
    count = max(1, round(phase.rate * phase.duration_s))
    plans = [sequential_plan(phase.steps, "wait", {"seconds": phase.tool_s}) for _ in range(count)]
    settings = {
        "db_pool_size": phase.pool_size,
        "db_max_overflow": phase.max_overflow,
        "step_concurrency": phase.step_concurrency,
        "poll_s": 0.5,
        "drain_s": 5,
    }
    with tempfile.TemporaryDirectory(prefix="planexec-load-") as tmp:
        async with bench_database(admin_dsn, "load") as (name, url):
            env = worker_env(url, catalog_config(Path(tmp)), **settings)
            bound = connection_bound(ExecutorSettings(**settings))  # type: ignore[arg-type]
            pool = await create_pool(url, max_size=10)
            fleet = Fleet(phase.workers, env, Path(tmp), phase.concurrency)
            sampler = ActivitySampler(admin_dsn, name, fleet.pids, every_s=0.1)
            try:
                await fleet.ready()
                sampler.start()
                offered = await offer_runs(pool, plans, phase.rate)
                offer_end = await pool.fetchval("SELECT clock_timestamp()")
                backlog = await pool.fetchval(
                    "SELECT count(*) FROM executor.runs WHERE status IN ('pending')"
                )
                await wait_finished(pool, offered.run_ids, phase.drain_timeout_s)
                await sampler.stop()
                figures = await run_figures(pool, offered.run_ids)
                warm = figures["first_created"]
                if warm is not None:
                    warm += datetime.timedelta(seconds=min(2.0, phase.duration_s / 4))
                rate_steps = await steps_per_s(pool, warm, offer_end) if warm else 0.0
            finally:
                fleet.stop()
                await pool.close()
            errors = fleet.errors()
    offered_steps = offered.rate * phase.steps
    held = (
        figures["lost"] == 0
        and offered.rate >= 0.95 * phase.rate
        and rate_steps >= 0.9 * offered_steps
        and figures["claim_to_start_ms"]["p99"] < HELD_P99_MS
    )
    figures.pop("first_created")
    figures.pop("last_finished")
    return {
        "workers": phase.workers,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "concurrency_per_worker": phase.concurrency,
        "offered_runs_per_s": phase.rate,
        "achieved_offer_runs_per_s": round(offered.rate, 1),
        "generator_lag_p99_ms": offered.lag_p99_ms,
        "duration_s": phase.duration_s,
        "steps_per_run": phase.steps,
        "tool_ms": phase.tool_s * 1000,
        "steps_per_s": rate_steps,
        "offered_steps_per_s": round(offered_steps, 1),
        "held": held,
        "pending_at_offer_end": int(backlog),
        **figures,
        "connections": {
            "max_per_worker_process": sampler.workers_max(),
            "max_by_process": sampler.max_by_process,
            "max_total_db": sampler.max_total,
            "bound_per_worker_process": bound["per_process"],
            "bound_detail": bound,
            "samples": sampler.samples,
        },
        "lock_waits": {
            "samples_waiting": sampler.lock_wait_samples,
            "longest_s": round(sampler.longest_lock_wait_s, 3),
        },
        "worker_errors": len(errors),
    }


def l1(admin_dsn: str) -> dict[str, Any]:
    """L1: a fixed rate with 1, 2 and 4 workers; their capacity; a rate ladder (see module)."""
    rate = float(_env_int("PLANEXEC_BENCH_L1_RATE", 30))
    seconds = float(_env_int("PLANEXEC_BENCH_L1_SECONDS", 12))
    overload = float(_env_int("PLANEXEC_BENCH_L1_OVERLOAD_RATE", 200))
    ladder = _env_list("PLANEXEC_BENCH_L1_LADDER", "60,90,120,150")
    ladder_workers = _env_int("PLANEXEC_BENCH_L1_LADDER_WORKERS", 2)
    fleets = _env_list("PLANEXEC_BENCH_L1_WORKERS", "1,2,4")
    phases, capacity, rungs = [], [], []
    for workers in fleets:
        phases.append(asyncio.run(load_phase(admin_dsn, LoadPhase(workers, rate, seconds))))
        _progress("L1 fixed rate", phases[-1])
    for workers in fleets:
        capacity.append(
            asyncio.run(load_phase(admin_dsn, LoadPhase(workers, overload, seconds / 2)))
        )
        _progress("L1 overload", capacity[-1])
    for rung in ladder:
        rungs.append(
            asyncio.run(load_phase(admin_dsn, LoadPhase(ladder_workers, float(rung), seconds)))
        )
        _progress("L1 ladder", rungs[-1])
        if not rungs[-1]["held"]:
            break
    held = [p["offered_runs_per_s"] for p in phases + rungs if p["held"]]
    broke = [p["offered_runs_per_s"] for p in rungs if not p["held"]]
    return {
        "phases": phases,
        "capacity": capacity,
        "ladder": rungs,
        "capacity_steps_per_s": {str(p["workers"]): p["steps_per_s"] for p in capacity},
        "highest_rate_held_runs_per_s": max(held, default=None),
        "first_rate_not_held_runs_per_s": min(broke, default=None),
        "held_means": "0 lost; the generator offered >= 95% of the rate; steps/s >= 90% of"
        f" what it offered; claim-to-start p99 < {HELD_P99_MS:g} ms",
        "capacity_means": f"steps/s finished while up to {overload:g} runs/s were offered; the"
        " generator shares the 2 cores, so see achieved_offer_runs_per_s: when it fell short,"
        " the figure is a lower bound of the fleet's capacity",
        "target": "RELIABILITY L1: 200 runs/s x 10 min nightly; 0 lost; p99 claim-to-start"
        " < 250 ms; connections bounded by pool config",
    }


def _progress(label: str, figures: dict[str, Any]) -> None:
    print(
        f"[{label}] workers={figures['workers']} rate={figures['offered_runs_per_s']} runs/s"
        f" steps/s={figures['steps_per_s']} c2s p99={figures['claim_to_start_ms']['p99']} ms"
        f" lost={figures['lost']} conns/worker={figures['connections']['max_per_worker_process']}"
        f" held={figures['held']} load={figures['load_avg_1m']}",
        file=sys.stderr,
        flush=True,
    )


# --- L2 ----------------------------------------------------------------------------------

TABLES = ("runs", "steps", "run_events", "attempts")


async def _table_stats(url: str) -> dict[str, dict[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            "SELECT relname, n_live_tup, n_dead_tup, autovacuum_count,"
            " pg_total_relation_size(relid) AS bytes"
            " FROM pg_stat_user_tables WHERE schemaname = 'executor' AND relname = ANY($1)",
            list(TABLES),
        )
    finally:
        await conn.close()
    return {
        r["relname"]: {
            "live": int(r["n_live_tup"]),
            "dead": int(r["n_dead_tup"]),
            "bytes": int(r["bytes"]),
            "autovacuums": int(r["autovacuum_count"]),
        }
        for r in rows
    }


async def build_backlog(url: str, runs: int, steps: int = 10) -> None:
    """Queue ``runs`` runs of ``steps`` noop steps, held back (``wake_at`` far ahead)."""
    pool = await create_pool(url, max_size=8)
    try:
        store = RunStore(pool)
        gate = asyncio.Semaphore(8)

        async def one() -> None:
            plan = sequential_plan(steps, "noop", {})
            async with gate:
                await store.create_run(plan, _decisions(plan), created_by=plan.created_by)

        for start in range(0, runs, 1000):
            t0 = time.monotonic()
            await asyncio.gather(*(one() for _ in range(min(1000, runs - start))))
            print(
                f"[L2 backlog] {min(runs, start + 1000)} runs queued, last 1000 in"
                f" {time.monotonic() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        await pool.execute("UPDATE executor.runs SET wake_at = 'infinity'")
        await pool.execute("VACUUM ANALYZE")
    finally:
        await pool.close()


async def drain(admin_dsn: str, template: str, workers: int, *, concurrency: int) -> dict[str, Any]:
    """Drain a copy of the backlog database ``template`` with ``workers`` processes."""
    settings = {"poll_s": 0.5, "drain_s": 5, "step_concurrency": 64}
    with tempfile.TemporaryDirectory(prefix="planexec-drain-") as tmp:
        async with bench_database(admin_dsn, "drain", template=template) as (name, url):
            before = await _table_stats(url)
            env = worker_env(url, catalog_config(Path(tmp)), **settings)
            pool = await create_pool(url, max_size=2)
            fleet = Fleet(workers, env, Path(tmp), concurrency)
            sampler = ActivitySampler(admin_dsn, name, fleet.pids, every_s=0.05)
            try:
                run_ids = [
                    r["run_id"] for r in await pool.fetch("SELECT run_id FROM executor.runs")
                ]
                await fleet.ready()
                sampler.start()
                deadlocks0 = await _deadlocks(admin_dsn, name)
                released = await pool.fetchval(
                    "WITH u AS (UPDATE executor.runs SET wake_at = NULL RETURNING 1)"
                    " SELECT clock_timestamp() FROM (SELECT count(*) FROM u) c,"
                    " pg_notify('planexec_runs', '') n"
                )
                t0 = time.monotonic()
                cpu0 = fleet.cpu_s()
                waited = await wait_finished(pool, None, 1800.0)
                worker_cpu = fleet.cpu_s() - cpu0
                await sampler.stop()
                figures = await run_figures(pool, run_ids)
            finally:
                fleet.stop()
                await pool.close()
            deadlocks = await _deadlocks(admin_dsn, name) - deadlocks0
            errors = fleet.errors()
            after = await _table_stats(url)
            conn = await asyncpg.connect(url)
            try:
                for table in TABLES:
                    await conn.execute(f"VACUUM executor.{table}")
            finally:
                await conn.close()
            await asyncio.sleep(0.5)
            vacuumed = await _table_stats(url)
    last = figures["last_finished"]
    drain_s = (last - released).total_seconds() if last is not None else float("nan")
    steps = figures["steps_succeeded"]
    return {
        "workers": workers,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "concurrency_per_worker": concurrency,
        "runs": len(run_ids),
        "steps": steps,
        "drain_s": round(drain_s, 2),
        "wall_s": round(waited, 2),
        "wall_check_s": round(time.monotonic() - t0, 2),
        "steps_per_s": round(steps / drain_s, 1) if drain_s > 0 else 0.0,
        "lost": figures["lost"],
        "statuses": figures["statuses"],
        "cpu_ms_per_step": {
            "workers": round(worker_cpu * 1000 / steps, 3) if steps else None,
            "postgres": round(sampler.backend_cpu_s * 1000 / steps, 3) if steps else None,
        },
        "longest_lock_wait_s": round(sampler.longest_lock_wait_s, 3),
        "lock_wait_samples": sampler.lock_wait_samples,
        "deadlocks": deadlocks,
        "max_connections_per_worker_process": sampler.workers_max(),
        "worker_errors": len(errors),
        "tables": {"backlog": before, "drained": after, "after_vacuum": vacuumed},
    }


async def _deadlocks(admin_dsn: str, name: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", name
        )
    finally:
        await conn.close()
    return int(value or 0)


async def _l2(
    admin_dsn: str, runs: int, fleets: Sequence[int], concurrency: int, setup_sql: str
) -> dict[str, Any]:
    started = time.monotonic()
    async with bench_database(admin_dsn, "backlog") as (template, url):
        await build_backlog(url, runs)
        if setup_sql:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(setup_sql)
                await conn.execute("ANALYZE executor.runs")
            finally:
                await conn.close()
        build_s = time.monotonic() - started
        # CREATE DATABASE ... TEMPLATE needs the template free of sessions.
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                template,
            )
        finally:
            await admin.close()
        drains = []
        for workers in fleets:
            drains.append(await drain(admin_dsn, template, workers, concurrency=concurrency))
            d = drains[-1]
            print(
                f"[L2] workers={workers} drain={d['drain_s']} s steps/s={d['steps_per_s']}"
                f" lost={d['lost']} longest lock wait={d['longest_lock_wait_s']} s",
                file=sys.stderr,
                flush=True,
            )
    base = drains[0]["drain_s"]
    return {
        "runs": runs,
        "steps_per_run": 10,
        "tool": "noop",
        "backlog_build_s": round(build_s, 1),
        "setup_sql": setup_sql or None,
        "drains": drains,
        "speedup": {str(d["workers"]): round(base / d["drain_s"], 2) for d in drains},
        "target": "RELIABILITY L2: 1,000,000 steps, >= 6x at 8 executors, no lock wait > 1 s,"
        " bloat reported after VACUUM",
    }


def l2(admin_dsn: str) -> dict[str, Any]:
    """L2: drain one backlog with each fleet size; drain time, speed-up, locks, bloat."""
    runs = _env_int("PLANEXEC_BENCH_L2_RUNS", 3000)
    fleets = _env_list("PLANEXEC_BENCH_L2_WORKERS", "1,2,4")
    concurrency = _env_int("PLANEXEC_BENCH_L2_CONCURRENCY", 16)
    setup_sql = os.environ.get("PLANEXEC_BENCH_L2_SETUP_SQL", "")
    return asyncio.run(_l2(admin_dsn, runs, fleets, concurrency, setup_sql))


def measure(admin_dsn: str) -> dict[str, Any]:
    """Both load tests: ``{"l1": ..., "l2": ...}`` (see :func:`l1`, :func:`l2`)."""
    return {"l1": l1(admin_dsn), "l2": l2(admin_dsn)}


if __name__ == "__main__":
    dsn = os.environ.get(
        "PLANEXEC_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    out = {"l1": l1, "l2": l2}.get(which, measure)(dsn)
    print(json.dumps(out, indent=2, default=str))
