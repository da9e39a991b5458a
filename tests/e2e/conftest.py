"""Fixtures of the end-to-end tests: planexec services as processes on a test database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from shared_schemas import Role

from .processes import Service, base_env, eventually, free_port, wait_healthy


@dataclass
class Pair:
    planner: str
    executor: str
    submitter: str
    approver: str
    operator: str
    other_tenant: str
    services: list[Service]

    def h(self, key: str) -> dict[str, str]:
        return {"X-API-Key": key}


@pytest.fixture
async def keys_for(db_url: str) -> AsyncIterator[dict[str, str]]:
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    store = ApiKeyStore(engine)

    async def make(tenant: str, *roles: Role, scopes: tuple[str, ...] = ()) -> str:
        return (
            await store.create(
                tenant=tenant, subject=f"{tenant}-{roles[0].value}", roles=roles, scopes=scopes
            )
        ).token

    keys = {
        "service": await make("system", Role.OPERATOR, scopes=("planexec:dispatch",)),
        "submitter": await make("acme", Role.SUBMITTER, scopes=("http:request",)),
        "approver": await make("acme", Role.APPROVER),
        "operator": await make("acme", Role.OPERATOR),
        "other": await make("globex", Role.SUBMITTER, Role.APPROVER, Role.OPERATOR),
    }
    await engine.dispose()
    yield keys


@contextlib.contextmanager
def start_pair(
    db_url: str,
    keys_for: dict[str, str],
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    worker_concurrency: int = 4,
) -> Iterator[Pair]:
    """Executor, planner and one worker as processes; ``extra_env`` goes to all three.

    On exit every process is stopped and must have shut down cleanly.
    """
    planner_port, executor_port = free_port(), free_port()
    planner_url = f"http://127.0.0.1:{planner_port}"
    executor_url = f"http://127.0.0.1:{executor_port}"
    common = {"PLANEXEC_SERVICE_API_KEY": keys_for["service"], **(extra_env or {})}
    executor = Service(
        "executor",
        ["executor", "--port", str(executor_port)],
        base_env(db_url, PLANEXEC_PLANNER_URL=planner_url, **common),
        log_dir,
    )
    services = [executor]
    try:
        wait_healthy(executor_url, executor)
        planner = Service(
            "planner",
            ["planner", "--port", str(planner_port)],
            base_env(db_url, PLANEXEC_CATALOG_URL=f"{executor_url}/v1/tools", **common),
            log_dir,
        )
        services.append(planner)
        wait_healthy(planner_url, planner)
        worker_env = base_env(
            db_url,
            PLANEXEC_PLANNER_URL=planner_url,
            PLANEXEC_DISPATCH_WAIT_S=2,
            PLANEXEC_DRAIN_S=5,
            **common,
        )
        worker = Service(
            "worker", ["worker", "--concurrency", str(worker_concurrency)], worker_env, log_dir
        )
        services.append(worker)
        eventually(lambda: _assert_in("worker_ready", worker.log()), timeout_s=60)
        yield Pair(
            planner_url,
            executor_url,
            keys_for["submitter"],
            keys_for["approver"],
            keys_for["operator"],
            keys_for["other"],
            services,
        )
    finally:
        codes = {s.name: s.stop() for s in reversed(services)}
        logs = {s.name: s.log() for s in services}
        # uvicorn re-raises SIGTERM after a clean shutdown, so -15 with its shutdown line is clean
        assert codes.get("worker", 0) == 0, logs
        for name in ("planner", "executor"):
            if name in codes:
                assert codes[name] in (0, -15), (codes, logs[name])
                assert "Application shutdown complete" in logs[name], logs[name]


@pytest.fixture
def pair(db_url: str, keys_for: dict[str, str], tmp_path: Path) -> Iterator[Pair]:
    """The pair with the built-in tools."""
    with start_pair(db_url, keys_for, tmp_path) as running:
        yield running


def _assert_in(needle: str, text: str) -> None:
    assert needle in text
