"""``POST /v1/plans`` throughput with the template backend, persisted, over loopback.

Starts ``planexec planner`` as a process on a fresh database of the test Postgres, creates a
key, and drives it with ``wrk`` (C, so the load generator takes little of the 2 cores) for
``duration_s`` seconds. Every request has a distinct context, so each one is a cache miss that
generates, validates, checks policy and persists a new plan (issue 4 target: 500 plans/s).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx2

ROOT = Path(__file__).resolve().parents[1]
PLANEXEC = str(ROOT / ".venv" / "bin" / "planexec")


def _admin(dsn: str, sql: str) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def _wait_healthy(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url + "/v1/healthz").status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("planner did not become healthy")


def run(
    admin_dsn: str,
    *,
    workers: int = 2,
    connections: int = 32,
    duration_s: int = 10,
    port: int = 18100,
) -> dict[str, Any]:
    """Measure plans/s and latency percentiles (ms) of ``POST /v1/plans`` with wrk.

    Raises:
        RuntimeError: when wrk is not installed (``make bench`` installs it).
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian package 'wrk')")
    name = f"planexec_bench_{uuid.uuid4().hex[:8]}"
    _admin(admin_dsn, f'CREATE DATABASE "{name}"')
    db_url = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    env = {
        **os.environ,
        "PLANEXEC_DATABASE_URL": db_url,
        "PLANEXEC_ENV": "test",
        "PLANEXEC_SIGNING_KEY": "b" * 40,
        "PLANEXEC_CATALOG_FILE": str(ROOT / "planner_service" / "catalogs" / "demo.json"),
        "PLANEXEC_LOG_LEVEL": "warning",
        "PLANEXEC_DB_POOL_SIZE": str(max(4, connections // workers)),
    }
    server = None
    try:
        subprocess.run([PLANEXEC, "migrate"], env=env, check=True, capture_output=True)
        key = subprocess.run(
            [PLANEXEC, "keys", "create", "--tenant", "bench", "--role", "submitter"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        server = subprocess.Popen(
            [PLANEXEC, "planner", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base)
        out = subprocess.run(
            [
                wrk,
                "-t2",
                f"-c{connections}",
                f"-d{duration_s}s",
                "-s",
                str(ROOT / "bench" / "plans.lua"),
                base,
            ],
            env={**env, "PLANEXEC_BENCH_KEY": key},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        stored = _admin(db_url, "SELECT count(*) FROM planner.plan_versions")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, duration_us, errors, p50, p99, _ = line.split()[1:]
    seconds = int(duration_us) / 1e6
    return {
        "plans_per_s": round(int(requests) / seconds, 1),
        "requests": int(requests),
        "errors": int(errors),
        "plans_stored": int(stored),
        "p50_ms": round(float(p50), 2),
        "p99_ms": round(float(p99), 2),
        "workers": workers,
        "connections": connections,
        "duration_s": duration_s,
        "target_plans_per_s": 500,
    }


if __name__ == "__main__":
    print(run("postgresql://postgres@127.0.0.1:5432/postgres"))
