"""Bring the demo stack up and down: tool servers, the planner, the executor, two workers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, ClassVar

import httpx2
import yaml

from planexec.auth import ApiKeyStore
from planexec.db import create_engine, database_url_for, upgrade
from planexec.settings import CommonSettings
from shared_schemas import Role

BIN = Path(sys.executable).parent
ASSETS = resources.files("planexec.demo") / "assets"
LEASE_TTL_S = 4.0
"""Run lease of the demo's workers, in seconds (the executor's default is 30): a run whose
worker was killed is taken over by another within about this long (plus one poll)."""


@dataclass(frozen=True)
class DemoKeys:
    """API keys the demo creates in tenant ``demo`` (and the system service key)."""

    service: str
    submitter: str
    approver: str


@dataclass
class Process:
    """One child process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def tail(self, lines: int = 20) -> str:
        """Last ``lines`` lines of the log."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class DemoStack:
    """Everything ``make run`` starts; ``stop()`` ends it in reverse order."""

    data_dir: Path
    planner_port: int = 8100
    executor_port: int = 8200
    httpbin_port: int = 8300
    processes: list[Process] = field(default_factory=list)
    database_url: str | None = None
    """The database the started processes use (set by ``prepare``)."""
    _worker_env: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    runs_workers: ClassVar[bool] = True
    """Whether this stack starts (and so may kill and replace) the worker processes."""

    @property
    def demo_dir(self) -> Path:
        """Where the demo keeps its config and logs."""
        return self.data_dir / "demo"

    @property
    def repo(self) -> Path:
        """The demo git repository."""
        return self.data_dir / "demo-repo"

    @property
    def planner_url(self) -> str:
        """Base URL of the planner."""
        return f"http://127.0.0.1:{self.planner_port}"

    @property
    def executor_url(self) -> str:
        """Base URL of the executor API."""
        return f"http://127.0.0.1:{self.executor_port}"

    @property
    def httpbin_url(self) -> str:
        """Base URL of httpbin."""
        return f"http://127.0.0.1:{self.httpbin_port}"

    # -- preparation ----------------------------------------------------------------------

    def make_repo(self) -> None:
        """A fresh demo git repository with a short, fixed history."""
        shutil.rmtree(self.repo, ignore_errors=True)
        self.repo.mkdir(parents=True)
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "Ada Lovelace",
            "GIT_AUTHOR_EMAIL": "ada@example.org",
            "GIT_COMMITTER_NAME": "Ada Lovelace",
            "GIT_COMMITTER_EMAIL": "ada@example.org",
        }

        def git(*args: str) -> None:
            subprocess.run(["git", *args], cwd=self.repo, env=env, check=True, capture_output=True)

        git("init", "-q", "-b", "main")
        history = [
            ("README.md", "# Analytical Engine\n", "Start the analytical engine notes"),
            ("notes/bernoulli.md", "Note G: Bernoulli numbers\n", "Add the Bernoulli program"),
            ("notes/loops.md", "Cycles of operations repeat\n", "Describe loops over cards"),
            ("CHANGELOG.md", "0.9: first translation\n", "Prepare the 0.9 changelog"),
            ("notes/poetry.md", "Poetical science\n", "Add a note on poetical science"),
        ]
        for day, (path, content, message) in enumerate(history, start=1):
            target = self.repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            git("add", path)
            stamp = f"2026-11-{day:02d}T10:00:00Z"
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = stamp
            git("commit", "-q", "-m", message)

    def write_catalog(self) -> Path:
        """The executor's catalog config: built-ins, httpbin (OpenAPI), git and time (MCP)."""
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        openapi = self.demo_dir / "httpbin.yaml"
        openapi.write_bytes((ASSETS / "openapi" / "httpbin.yaml").read_bytes())
        config = {
            "builtins": ["transform", "wait", "noop", "http.request"],
            "http": {"allow_networks": ["127.0.0.1/32"], "allow_ports": [self.httpbin_port]},
            "openapi": [
                {"prefix": "httpbin", "document": "httpbin.yaml", "base_url": self.httpbin_url}
            ],
            "mcp": [
                {
                    "name": "git",
                    "transport": "stdio",
                    "command": [str(BIN / "mcp-server-git"), "--repository", str(self.repo)],
                    "cwd": str(self.repo),
                    "write_scopes": ["git:write"],
                },
                {"name": "time", "transport": "stdio", "command": [str(BIN / "mcp-server-time")]},
            ],
        }
        path = self.demo_dir / "catalog.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        policies = self.demo_dir / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "demo.cedar").write_bytes((ASSETS / "policies" / "demo.cedar").read_bytes())
        templates = self.demo_dir / "templates"
        templates.mkdir(exist_ok=True)
        for template in (ASSETS / "templates").iterdir():
            if template.name.endswith(".yaml"):
                (templates / template.name).write_bytes(template.read_bytes())
        return path

    async def prepare(self) -> DemoKeys:
        """Migrate the embedded database and create the demo's keys."""
        settings = CommonSettings(data_dir=self.data_dir)
        url = await asyncio.to_thread(database_url_for, settings)
        # The demo process holds the embedded server; its children connect by URL and never
        # join it, so the server stops when the demo exits, even after a SIGKILLed worker.
        self.database_url = url
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url, pool_size=1, max_overflow=0)
        store = ApiKeyStore(engine)
        try:
            service = await store.create(
                tenant="system",
                subject="executor",
                roles=[Role.OPERATOR],
                scopes=["planexec:dispatch"],
            )
            submitter = await store.create(
                tenant="demo",
                subject="dev@demo",
                roles=[Role.SUBMITTER],
                scopes=["git:write", "webhook:post"],
            )
            approver = await store.create(tenant="demo", subject="lead@demo", roles=[Role.APPROVER])
        finally:
            await engine.dispose()
        return DemoKeys(service.token, submitter.token, approver.token)

    # -- processes --------------------------------------------------------------------------

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        logs = self.demo_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        process = Process(name, proc, log_path, log)
        self.processes.append(process)
        return process

    def _env(self, keys: DemoKeys, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANEXEC_")}
        env |= {
            "PLANEXEC_DATA_DIR": str(self.data_dir),
            **({"PLANEXEC_DATABASE_URL": self.database_url} if self.database_url else {}),
            "PLANEXEC_SERVICE_API_KEY": keys.service,
            "PLANEXEC_LOG_LEVEL": "info",
        }
        for name in ("PLANEXEC_LLM_BASE_URL", "PLANEXEC_LLM_API_KEY", "PLANEXEC_LLM_MODEL"):
            if name in os.environ:
                env[name] = os.environ[name]
        return env | extra

    @property
    def planner_backend(self) -> str:
        """The planner backend: ``openai`` when an LLM is configured, else ``template``."""
        if os.environ.get("OPENAI_API_KEY") or os.environ.get("PLANEXEC_LLM_BASE_URL"):
            return "openai"
        return "template"

    def _wait_healthy(self, url: str, process: Process, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            try:
                if httpx2.get(url, timeout=2).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{process.name} did not become healthy:\n{process.tail()}")

    def _wait_log(self, process: Process, needle: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            if needle in process.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{process.name} did not log {needle!r}:\n{process.tail()}")

    def start(self, keys: DemoKeys, catalog: Path) -> None:
        """Start httpbin, the executor, the planner and two workers; wait until they serve."""
        httpbin = self._start(
            "httpbin",
            [
                sys.executable,
                "-m",
                "planexec.demo.httpbin_server",
                "--port",
                str(self.httpbin_port),
            ],
            self._env(keys),
        )
        self._wait_healthy(f"{self.httpbin_url}/get", httpbin)
        executor_env = self._env(
            keys,
            PLANEXEC_CATALOG_CONFIG=str(catalog),
            PLANEXEC_PLANNER_URL=self.planner_url,
            PLANEXEC_EXECUTOR_PORT=str(self.executor_port),
        )
        executor = self._start("executor", [str(BIN / "planexec"), "executor"], executor_env)
        # The workers need neither the executor API nor the planner to start (their dispatch
        # loop retries until the planner answers): they load their catalog meanwhile.
        self._worker_env = executor_env | {
            "PLANEXEC_DISPATCH_WAIT_S": "2",
            "PLANEXEC_LEASE_TTL_S": f"{LEASE_TTL_S:g}",
        }
        workers = [self.start_worker() for _ in (1, 2)]
        self._wait_healthy(f"{self.executor_url}/v1/healthz", executor)
        planner = self._start(
            "planner",
            [str(BIN / "planexec"), "planner"],
            self._env(
                keys,
                PLANEXEC_PORT=str(self.planner_port),
                PLANEXEC_CATALOG_URL=f"{self.executor_url}/v1/tools",
                PLANEXEC_POLICY_DIR=str(self.demo_dir / "policies"),
                PLANEXEC_TEMPLATES_DIR=str(self.demo_dir / "templates"),
                PLANEXEC_DEFAULT_BACKEND=self.planner_backend,
            ),
        )
        self._wait_healthy(f"{self.planner_url}/v1/healthz", planner)
        for worker in workers:
            self.wait_ready(worker)

    # -- workers ----------------------------------------------------------------------------

    def start_worker(self) -> Process:
        """Start one more ``planexec worker`` (``worker-<n>``), without waiting for it.

        Raises:
            RuntimeError: before ``start()`` (the workers' environment is not known yet).
        """
        if not self._worker_env:
            raise RuntimeError("start() the stack before adding a worker")
        n = 1 + sum(p.name.startswith("worker-") for p in self.processes)
        return self._start(f"worker-{n}", [str(BIN / "planexec"), "worker"], self._worker_env)

    def wait_ready(self, worker: Process, timeout_s: float = 90.0) -> None:
        """Wait until ``worker`` logs ``worker_ready`` (its catalog loaded, its loop running).

        Raises:
            RuntimeError: when it exits first, or is not ready within ``timeout_s`` seconds.
        """
        self._wait_log(worker, "worker_ready", timeout_s)

    def worker_of(self, lease_owner: str) -> Process | None:
        """The worker process whose id (``<host>:<pid>:<suffix>``) is ``lease_owner``."""
        host, _, rest = lease_owner.partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return None
        for process in self.processes:
            if process.name.startswith("worker-") and process.proc.pid == int(pid):
                return process
        return None

    def kill_worker(self, lease_owner: str) -> Process:
        """SIGKILL the worker named by a run's ``lease_owner`` and reap it.

        No drain, no lease release: its in-flight calls are lost with it.

        Returns:
            The killed process (it stays listed, with exit status -9).

        Raises:
            LookupError: when no running worker of this stack has that id.
        """
        process = self.worker_of(lease_owner)
        if process is None or process.proc.poll() is not None:
            raise LookupError(f"no running worker of this stack is {lease_owner!r}")
        process.proc.kill()
        process.proc.wait(timeout=10)
        return process

    def stop(self) -> dict[str, int]:
        """Stop every process (SIGTERM, then SIGKILL after 20 s), newest first."""
        codes: dict[str, int] = {}
        for process in reversed(self.processes):
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait()
            process.log.close()
            codes[process.name] = process.proc.returncode
        self.processes.clear()
        return codes
