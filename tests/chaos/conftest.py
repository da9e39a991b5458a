"""Fixtures of the process-level fault tests (RELIABILITY §2): workers as real processes.

Workers run as ``python -m planexec.cli worker`` from this tree on a per-test database, with
the tools of ``catalog``: the built-ins ``transform``, ``wait``, ``noop`` and the recording
sink's OpenAPI operations ``sink.effect`` (a keyed POST the sink deduplicates, declared
idempotent), ``sink.effect_unsafe`` and ``sink.ping`` (a GET). The sink runs in this process
and counts effects at the receiving end.

``PLANEXEC_CHAOS_SCALE`` (default 1) multiplies run counts for the long variant
(``make chaos`` runs it with 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from executor_service.store.runs import RunStore
from planexec.db.pg import create_pool
from shared_schemas import Plan, PlannerInfo, PolicyDecision, Step, seal

from ..e2e.processes import base_env, until
from ..support.recording_server import RecordingServer, openapi_document

ROOT = Path(__file__).resolve().parents[2]
SCALE = max(1, int(os.environ.get("PLANEXEC_CHAOS_SCALE", "1")))
"""Multiplier of run counts (and so of durations) for the long variant."""
SIGNING_KEY = b"c" * 40
T = TypeVar("T")


class WorkerProcess:
    """One ``planexec worker`` process, restartable; each start logs to its own file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, concurrency: int) -> None:
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.concurrency = concurrency
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.ids: list[str] = []
        """Worker id (lease owner) of each start that became ready, in order."""
        self.exit_codes: list[int] = []

    @property
    def log_path(self) -> Path:
        """The log file of the current (or last) start."""
        return self.log_dir / f"{self.name}.{self.starts}.log"

    @property
    def pid(self) -> int:
        """Process id of the current start."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> WorkerProcess:
        """Start the process (without waiting for it to be ready)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        command = [sys.executable, "-m", "planexec.cli", "worker"]
        command += ["--concurrency", str(self.concurrency)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def lines(self, *, every_start: bool = False) -> list[dict[str, Any]]:
        """The JSON log lines (with an ``event``) of the current start, or of every start."""
        starts = range(1, self.starts + 1) if every_start else [self.starts]
        out: list[dict[str, Any]] = []
        for start in starts:
            path = self.log_dir / f"{self.name}.{start}.log"
            if not path.exists():
                continue
            for raw in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if isinstance(line, dict) and "event" in line:
                        out.append(line)
        return out

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the current log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    async def ready(self, timeout_s: float = 60.0) -> str:
        """Wait for ``worker_ready``; returns this start's worker id (its lease owner name)."""

        async def check() -> str:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            for line in self.lines():
                if line.get("event") == "worker_ready":
                    return str(line["worker"])
            raise AssertionError("not ready")

        try:
            worker = await until(check, timeout_s)
        except SystemExit as exc:
            raise AssertionError(str(exc)) from None
        self.ids.append(worker)
        return worker

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the current start."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL the current start and reap it; returns its exit code (-9)."""
        assert self.proc is not None
        self.proc.kill()
        code = self.proc.wait(timeout=10)
        self.exit_codes.append(code)
        return code

    async def wait_exit(self, timeout_s: float) -> int:
        """Wait for the current start to exit by itself; returns its exit code."""
        assert self.proc is not None
        proc = self.proc

        async def check() -> int:
            code = proc.poll()
            assert code is not None, "still running"
            return code

        code = await until(check, timeout_s, 0.02)
        self.exit_codes.append(code)
        return code

    def cleanup(self) -> None:
        """SIGCONT and SIGKILL the current start if it still runs (test teardown)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def sink() -> Iterator[RecordingServer]:
    """The recording sink, in a thread of the test process, fresh per test."""
    with RecordingServer() as server:
        yield server


@pytest.fixture
def catalog(tmp_path: Path, sink: RecordingServer) -> Path:
    """The workers' ``PLANEXEC_CATALOG_CONFIG``: built-ins plus the sink's operations."""
    (tmp_path / "sink-openapi.json").write_text(json.dumps(openapi_document(sink.base_url)))
    config = {
        "builtins": ["transform", "wait", "noop"],
        "http": {"allow_networks": ["127.0.0.1/32"], "allow_ports": [sink.port]},
        "openapi": [{"prefix": "sink", "document": "sink-openapi.json", "base_url": sink.base_url}],
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test database that decodes jsonb (``create_pool``)."""
    connections = await create_pool(db_url, max_size=8)
    try:
        yield connections
    finally:
        await connections.close()


Spawn = Callable[..., WorkerProcess]


def spawner(db_url: str, catalog: Path, log_dir: Path, started: list[WorkerProcess]) -> Spawn:
    """A ``spawn`` function for workers on ``db_url``; each one is appended to ``started``."""

    def make(
        name: str, concurrency: int = 8, *, database_url: str | None = None, **settings: Any
    ) -> WorkerProcess:
        values = {"poll_s": 0.2, "drain_s": 5, **settings}
        env = base_env(
            database_url or db_url,
            PLANEXEC_CATALOG_CONFIG=catalog,
            **{f"PLANEXEC_{k.upper()}": v for k, v in values.items()},
        )
        worker = WorkerProcess(name, env, log_dir, concurrency).start()
        started.append(worker)
        return worker

    return make


@pytest.fixture
def spawn(db_url: str, catalog: Path, tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(name, concurrency=8, database_url=None, **settings)``: a started worker process.

    ``settings`` are ``PLANEXEC_*`` values by field name (``lease_ttl_s=2``);
    ``database_url`` replaces the test database's URL (e.g. to go through a proxy). Every
    worker still running at teardown is killed.
    """
    started: list[WorkerProcess] = []
    try:
        yield spawner(db_url, catalog, tmp_path, started)
    finally:
        for worker in started:
            worker.cleanup()


def make_plan(steps: list[dict[str, Any]], tenant: str = "acme") -> Plan:
    """A sealed plan version 1 of ``steps`` (``Step`` dicts)."""
    plan = Plan(
        plan_id=uuid.uuid4(),
        version=1,
        intent="chaos test",
        tenant=tenant,
        created_by=f"{tenant}-chaos",
        steps=[Step.model_validate(s) for s in steps],
        catalog_version="sha256:" + "0" * 64,
        policy_version="sha256:" + "0" * 64,
        planner=PlannerInfo(backend="draft"),
    )
    return seal(plan, SIGNING_KEY)


async def create_runs(pool: asyncpg.Pool, plans: list[Plan], parallel: int = 8) -> list[uuid.UUID]:
    """Create one run per plan directly in the store (as dispatch would); ids in plan order."""
    store = RunStore(pool)
    gate = asyncio.Semaphore(parallel)

    async def one(plan: Plan) -> uuid.UUID:
        decisions = [
            PolicyDecision(step_id=s.id, tool=s.tool, decision="allow") for s in plan.steps
        ]
        async with gate:
            run_id, created = await store.create_run(plan, decisions, created_by=plan.created_by)
        assert created
        return run_id

    return list(await asyncio.gather(*(one(plan) for plan in plans)))


async def db_now(pool: asyncpg.Pool) -> Any:
    """The database clock (``clock_timestamp()``), the clock of lease and event times."""
    return await pool.fetchval("SELECT clock_timestamp()")


async def statuses(pool: asyncpg.Pool, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Run id -> status."""
    rows = await pool.fetch(
        "SELECT run_id, status FROM executor.runs WHERE run_id = ANY($1::uuid[])", run_ids
    )
    return {row["run_id"]: row["status"] for row in rows}


async def all_finished(
    pool: asyncpg.Pool, run_ids: list[uuid.UUID], finished: frozenset[str]
) -> dict[uuid.UUID, str]:
    """Run statuses, or AssertionError while one is not in ``finished`` (for ``until``)."""
    current = await statuses(pool, run_ids)
    waiting = {str(r): s for r, s in current.items() if s not in finished}
    assert not waiting, f"{len(waiting)} runs not finished, e.g. {list(waiting.items())[:3]}"
    return current


async def events_of(pool: asyncpg.Pool, run_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Every event of the runs, by run and seq."""
    rows = await pool.fetch(
        "SELECT run_id, seq, type, step_id, attempt, payload, at FROM executor.run_events"
        " WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, seq",
        run_ids,
    )
    return [dict(row) for row in rows]
