"""Helpers of the process-level fault tests (``test_faults.py``, RELIABILITY §2).

``FaultLab`` starts ``planexec worker`` processes (optionally with a test-only fault point,
``PLANEXEC_FAULT=<point>[:<step_id>]``, that ends the process with status 137) and the
executor API as a process, all on one test database and one tool catalog: the built-ins
``wait`` and ``noop`` and the recording sink's OpenAPI operations ``sink.effect`` (a keyed
POST the sink deduplicates by ``Idempotency-Key``, declared idempotent) and
``sink.effect_unsafe`` (a POST that makes a new effect on every request, declared not
idempotent). Runs are created directly in the store, as the dispatch loop would.
"""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from executor_service.store.runs import RunStore
from shared_schemas import Plan, PlannerInfo, PolicyDecision, Step, seal

from ..support.recording_server import RecordingServer, openapi_document
from .processes import Service, base_env, free_port, until

T = TypeVar("T")
SIGNING_KEY = "f" * 40
TENANT = "acme"  # the tenant of the ``keys_for`` API keys
FAULT_EXIT = 137
"""Exit status of a worker that reached its fault point (``os._exit(137)``)."""


def write_catalog(directory: Path, sink: RecordingServer) -> Path:
    """The ``PLANEXEC_CATALOG_CONFIG`` of the workers and the executor API."""
    (directory / "sink-openapi.json").write_text(json.dumps(openapi_document(sink.base_url)))
    config = {
        "builtins": ["wait", "noop"],
        "http": {"allow_networks": ["127.0.0.1/32"], "allow_ports": [sink.port]},
        "openapi": [{"prefix": "sink", "document": "sink-openapi.json", "base_url": sink.base_url}],
    }
    path = directory / "catalog.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class Worker:
    """One ``planexec worker`` process (one start of it)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.id: str | None = None
        """Its lease owner name, once ready."""

    @property
    def name(self) -> str:
        """The name given at start (its log file is ``<name>.log``)."""
        return self.service.name

    def exit_code(self) -> int | None:
        """The exit status, None while it runs."""
        return self.service.proc.poll()

    def log(self) -> str:
        """The whole log of this start."""
        return self.service.log_path.read_text(errors="replace")

    async def ready(self, timeout_s: float = 60.0) -> str:
        """Wait for its ``worker_ready`` log line; returns its worker id (the lease owner)."""

        async def check() -> str:
            code = self.exit_code()
            if code is not None:
                raise SystemExit(f"{self.name} exited {code}: {self.log()[-3000:]}")
            for raw in self.log().splitlines():
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if isinstance(line, dict) and line.get("event") == "worker_ready":
                        return str(line["worker"])
            raise AssertionError("not ready")

        try:
            self.id = await until(check, timeout_s, 0.1)
        except SystemExit as exc:
            raise AssertionError(str(exc)) from None
        return self.id

    async def exited(self, timeout_s: float = 30.0) -> int:
        """Wait until the process exits by itself; returns its exit status."""

        async def check() -> int:
            code = self.exit_code()
            assert code is not None, f"{self.name} still runs"
            return code

        return await until(check, timeout_s)

    def kill(self) -> int:
        """SIGKILL it and reap it; returns its exit status (-9)."""
        return self.service.stop(signal.SIGKILL, timeout_s=10)

    def stop(self) -> int:
        """SIGTERM it (drain, then exit); returns its exit status."""
        return self.service.stop(signal.SIGTERM, timeout_s=30)


class FaultLab:
    """Worker processes and the executor API of one test, on one database and catalog."""

    def __init__(self, db_url: str, catalog: Path, log_dir: Path, pool: asyncpg.Pool) -> None:
        self.db_url = db_url
        self.catalog = catalog
        self.log_dir = log_dir
        self.pool = pool
        self.store = RunStore(pool)
        self.services: list[Service] = []
        self._starts = 0

    def worker(self, name: str, fault: str | None = None, **settings: Any) -> Worker:
        """Start a worker process (not waiting for it to be ready).

        ``settings`` are ``PLANEXEC_*`` values by field name, e.g. ``lease_ttl_s=1``;
        ``fault`` is ``<point>[:<step_id>]`` (``executor_service.engine.faults``).
        """
        self._starts += 1
        values: dict[str, Any] = {"poll_s": 0.2, "drain_s": 2, **settings}
        if fault is not None:
            values["fault"] = fault
        env = base_env(
            self.db_url,
            PLANEXEC_CATALOG_CONFIG=self.catalog,
            PLANEXEC_SIGNING_KEY=SIGNING_KEY,
            **{f"PLANEXEC_{k.upper()}": v for k, v in values.items()},
        )
        service = Service(f"{self._starts:02d}-{name}", ["worker"], env, self.log_dir)
        self.services.append(service)
        return Worker(service)

    def executor(self) -> tuple[str, Service]:
        """Start the executor API process; returns its base URL (wait with ``api_ready``)."""
        port = free_port()
        env = base_env(
            self.db_url, PLANEXEC_CATALOG_CONFIG=self.catalog, PLANEXEC_SIGNING_KEY=SIGNING_KEY
        )
        service = Service("executor", ["executor", "--port", str(port)], env, self.log_dir)
        self.services.append(service)
        return f"http://127.0.0.1:{port}", service

    def cleanup(self) -> None:
        """Kill every process still running (test teardown)."""
        for service in self.services:
            if service.proc.poll() is None:
                service.stop(signal.SIGKILL, timeout_s=10)
            else:
                service.stop()  # closes the log file

    async def create_run(self, steps: list[dict[str, Any]]) -> uuid.UUID:
        """Create a run of a sealed one-version plan of ``steps`` (``Step`` dicts)."""
        plan = Plan(
            plan_id=uuid.uuid4(),
            version=1,
            intent="fault test",
            tenant=TENANT,
            created_by=f"{TENANT}-faults",
            steps=[Step.model_validate(s) for s in steps],
            catalog_version="sha256:" + "0" * 64,
            policy_version="sha256:" + "0" * 64,
            planner=PlannerInfo(backend="draft"),
        )
        plan = seal(plan, SIGNING_KEY.encode())
        decisions = [
            PolicyDecision(step_id=s.id, tool=s.tool, decision="allow") for s in plan.steps
        ]
        run_id, created = await self.store.create_run(plan, decisions, created_by=plan.created_by)
        assert created
        return run_id

    async def run(self, run_id: uuid.UUID) -> asyncpg.Record:
        """The run's row of ``executor.runs``."""
        row = await self.pool.fetchrow("SELECT * FROM executor.runs WHERE run_id = $1", run_id)
        assert row is not None
        return row

    async def steps(self, run_id: uuid.UUID) -> dict[str, asyncpg.Record]:
        """The run's step rows by step id."""
        rows = await self.pool.fetch("SELECT * FROM executor.steps WHERE run_id = $1", run_id)
        return {row["step_id"]: row for row in rows}

    async def attempts(self, run_id: uuid.UUID) -> list[asyncpg.Record]:
        """The run's attempt rows (actions and compensations), in insertion order."""
        return list(
            await self.pool.fetch(
                "SELECT * FROM executor.attempts WHERE run_id = $1"
                " ORDER BY started_at, kind, attempt",
                run_id,
            )
        )

    async def events(self, run_id: uuid.UUID) -> list[asyncpg.Record]:
        """The run's events by ``seq``."""
        return list(
            await self.pool.fetch(
                "SELECT seq, type, step_id, attempt, payload, at FROM executor.run_events"
                " WHERE run_id = $1 ORDER BY seq",
                run_id,
            )
        )

    async def status_in(self, run_id: uuid.UUID, *statuses: str, timeout_s: float = 30.0) -> str:
        """Wait until the run's status is one of ``statuses``; returns it."""

        async def check() -> str:
            status = str((await self.run(run_id))["status"])
            assert status in statuses, f"run {run_id} is {status}, not in {statuses}"
            return status

        return await until(check, timeout_s)

    async def expire_lease(self, *run_ids: uuid.UUID) -> None:
        """Make the runs' leases look a minute old (the R5 rescue setup)."""
        await self.pool.execute(
            "UPDATE executor.runs SET lease_expires_at = now() - interval '1 min'"
            " WHERE run_id = ANY($1::uuid[])",
            list(run_ids),
        )


def sink_requests(sink: RecordingServer, name: str) -> list[dict[str, Any]]:
    """Every request the sink recorded for effect ``name``, in arrival order."""
    return [entry for entry in sink.log() if entry["name"] == name]


def effect_names(sink: RecordingServer, prefix: str) -> list[str]:
    """Names of the effects the sink made whose name starts with ``prefix``, in order."""
    return [
        e["name"] for e in sink.log() if e["outcome"] == "effect" and e["name"].startswith(prefix)
    ]


def effect(step_id: str, name: str, **extra: Any) -> dict[str, Any]:
    """A step making one keyed effect ``name`` at the sink (``sink.effect``)."""
    return {"id": step_id, "tool": "sink.effect", "args": {"name": name, "body": {}}, **extra}
