"""The demo against a stack someone else runs: ``docker compose run --rm demo``.

``make run`` starts its own processes (``stack.py``); the compose stack has them running
already, in other containers. Two steps of the demo then run on their own:

- ``init`` (the compose ``demo-init`` service, before the executor and the worker start): the
  demo git repository and the executor's catalog config, in a data directory shared by the
  executor, the worker and the demo (a named volume). ``mcp-server-git`` refuses to start
  without its repository, so it must exist before the executor reads the catalog.
- ``run_external`` (the compose ``demo`` service): a fresh demo repository (so the release
  branch can be created again), the demo's own submitter and approver keys in the stack's
  database, then the demo intents of ``scenario.py`` against the planner and executor URLs,
  except the worker crash (``crash.py``): it kills one of ``make run``'s own worker processes.

The catalog has the sources of ``DemoStack.write_catalog`` (``make run``): the same tool names,
so the same templates and policies apply; only the addresses differ.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TextIO
from urllib.parse import urlsplit

import httpx2
import yaml

from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from planexec.settings import CommonSettings
from shared_schemas import Role

from .scenario import Demo
from .stack import ASSETS, BIN, DemoKeys, DemoStack

PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
"""RFC 1918 ranges, where Docker gives container networks their addresses. The executor's
network guard refuses private addresses unless allowed; the catalog also allows only the
httpbin host name and port, so these ranges open nothing else."""


@dataclass
class ExternalStack(DemoStack):
    """A ``DemoStack`` whose planner and executor run elsewhere: it starts no process."""

    planner_base: str = "http://127.0.0.1:8100"
    executor_base: str = "http://127.0.0.1:8200"

    runs_workers: ClassVar[bool] = False
    """The workers run in other containers: the demo's worker crash is skipped."""

    @property
    def planner_url(self) -> str:
        """Base URL of the planner, no trailing slash."""
        return self.planner_base.rstrip("/")

    @property
    def executor_url(self) -> str:
        """Base URL of the executor API, no trailing slash."""
        return self.executor_base.rstrip("/")


def catalog_path(data_dir: Path) -> Path:
    """Where ``init`` writes the catalog config: ``<data_dir>/demo/catalog.yaml``."""
    return DemoStack(data_dir).demo_dir / "catalog.yaml"


def catalog_config(
    httpbin_url: str, repo: Path, allow_networks: Sequence[str], bin_dir: Path = BIN
) -> dict[str, Any]:
    """The executor's catalog config (``executor_service.tools.registry`` format).

    Args:
        httpbin_url: Base URL of httpbin as the executor reaches it (``http://httpbin:8300``).
        repo: The demo git repository, a path the executor's container sees.
        allow_networks: CIDRs the network guard allows for the httpbin host.
        bin_dir: Directory of the ``mcp-server-git`` and ``mcp-server-time`` executables.

    Returns:
        The config mapping; the OpenAPI document ``httpbin.yaml`` is named relative to it.

    Raises:
        ValueError: for an httpbin URL without a host.
    """
    url = urlsplit(httpbin_url)
    if not url.hostname:
        raise ValueError(f"httpbin URL {httpbin_url!r} has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    return {
        "builtins": ["transform", "wait", "noop", "http.request"],
        "http": {
            "allow_networks": list(allow_networks),
            "allow_ports": [port],
            "allow_hosts": [url.hostname],
        },
        "openapi": [
            {"prefix": "httpbin", "document": "httpbin.yaml", "base_url": httpbin_url.rstrip("/")}
        ],
        "mcp": [
            {
                "name": "git",
                "transport": "stdio",
                "command": [str(bin_dir / "mcp-server-git"), "--repository", str(repo)],
                "write_scopes": ["git:write"],
            },
            {"name": "time", "transport": "stdio", "command": [str(bin_dir / "mcp-server-time")]},
        ],
    }


def init(data_dir: Path, httpbin_url: str, allow_networks: Sequence[str]) -> Path:
    """Create the demo repository and write the catalog config (and its OpenAPI document).

    Args:
        data_dir: The shared data directory; the repository goes to ``<data_dir>/demo-repo``.
        httpbin_url: Base URL of httpbin as the executor and the worker reach it.
        allow_networks: CIDRs the network guard allows for the httpbin host.

    Returns:
        The catalog config path (``catalog_path(data_dir)``).

    Raises:
        subprocess.CalledProcessError: when ``git`` fails.
    """
    stack = DemoStack(data_dir)
    stack.make_repo()
    stack.demo_dir.mkdir(parents=True, exist_ok=True)
    document = (ASSETS / "openapi" / "httpbin.yaml").read_bytes()
    (stack.demo_dir / "httpbin.yaml").write_bytes(document)
    path = catalog_path(data_dir)
    config = catalog_config(httpbin_url, stack.repo, allow_networks)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


async def create_keys(settings: CommonSettings) -> DemoKeys:
    """The demo's submitter and approver keys (tenant ``demo``), as ``DemoStack.prepare``.

    The stack's service key is its operator's, so ``DemoKeys.service`` is empty: the demo
    intents use only the submitter and the approver.

    Raises:
        ValueError: when ``settings.database_url`` is unset (the demo must not start an
            embedded Postgres beside the stack's).
    """
    if not settings.database_url:
        raise ValueError("--external needs PLANEXEC_DATABASE_URL, the stack's database")
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    store = ApiKeyStore(engine)
    try:
        submitter = await store.create(
            tenant="demo",
            subject="dev@demo",
            roles=[Role.SUBMITTER],
            scopes=["git:write", "webhook:post"],
            description="docker compose run demo",
        )
        approver = await store.create(
            tenant="demo",
            subject="lead@demo",
            roles=[Role.APPROVER],
            description="docker compose run demo",
        )
    finally:
        await engine.dispose()
    return DemoKeys("", submitter.token, approver.token)


def wait_healthy(urls: Sequence[str], timeout_s: float = 120.0) -> None:
    """Wait until every URL answers 200.

    Raises:
        TimeoutError: when one does not within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            try:
                if httpx2.get(url, timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout_s:g} s")
            time.sleep(0.5)


def run_external(stack: ExternalStack, settings: CommonSettings, out: TextIO) -> bool:
    """Run the demo intents against a running stack; True when every outcome was expected.

    Creates the demo's keys, recreates the demo repository under ``stack.data_dir`` (which
    must be the directory the executor's ``mcp-server-git`` serves), waits for the planner and
    the executor, then runs ``scenario.Demo``.

    Raises:
        ValueError: when ``settings.database_url`` is unset.
        TimeoutError: when the planner or the executor does not become healthy.
    """
    print(f"planexec demo: keys, and a fresh demo git repo at {stack.repo}", file=out, flush=True)
    keys = asyncio.run(create_keys(settings))
    stack.make_repo()
    wait_healthy([f"{stack.planner_url}/v1/healthz", f"{stack.executor_url}/v1/healthz"])
    print(
        f"planexec demo: planner {stack.planner_url}, executor {stack.executor_url}",
        file=out,
        flush=True,
    )
    return Demo(stack, keys, out).run_all()
