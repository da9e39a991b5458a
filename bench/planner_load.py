"""``POST /v1/plans`` throughput with the template backend, persisted, over loopback.

Starts ``planexec planner`` as a process on a fresh database of the local Postgres, creates a
key, then drives it with ``concurrency`` clients for ``duration_s`` seconds. Intents vary over
the IANA zones so that most requests are cache misses that generate, validate, check policy
and persist a new plan (issue 4 target: at least 500 plans/s on this 2-core machine).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import asyncpg
import httpx2

ROOT = Path(__file__).resolve().parents[1]
PLANEXEC = str(ROOT / ".venv" / "bin" / "planexec")


async def _wait_healthy(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx2.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url + "/v1/healthz")).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("planner did not become healthy")


async def run(
    admin_dsn: str, *, workers: int = 2, concurrency: int = 32, duration_s: float = 10.0
) -> dict[str, Any]:
    """Measure plans/s and latency percentiles (ms) of ``POST /v1/plans``."""
    name = f"planexec_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    port = 18100
    env = {
        **os.environ,
        "PLANEXEC_DATABASE_URL": db_url,
        "PLANEXEC_ENV": "test",
        "PLANEXEC_SIGNING_KEY": "b" * 40,
        "PLANEXEC_CATALOG_FILE": str(ROOT / "planner_service" / "catalogs" / "demo.json"),
        "PLANEXEC_LOG_LEVEL": "warning",
        "PLANEXEC_DB_POOL_SIZE": str(max(4, concurrency // workers)),
    }
    subprocess.run([PLANEXEC, "migrate"], env=env, check=True, capture_output=True)
    key = subprocess.run(
        [PLANEXEC, "keys", "create", "--tenant", "bench", "--role", "submitter"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()
    server = subprocess.Popen(
        [PLANEXEC, "planner", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    zones = sorted(zoneinfo.available_timezones())
    latencies: list[float] = []
    errors = 0
    try:
        await _wait_healthy(base)
        stop = time.monotonic() + duration_s
        counter = 0

        async def client_loop(client: httpx2.AsyncClient) -> None:
            nonlocal counter, errors
            while time.monotonic() < stop:
                counter += 1
                zone = zones[counter % len(zones)]
                t0 = time.perf_counter()
                response = await client.post(
                    "/v1/plans",
                    json={"intent": f"what time is it in {zone}", "context": {"n": counter}},
                    headers={"X-API-Key": key},
                )
                latencies.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 201:
                    errors += 1

        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            started = time.perf_counter()
            await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        stored = await admin.fetchval(f'SELECT 1')  # keep the admin connection alive
        del stored
    finally:
        server.terminate()
        server.wait(timeout=15)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    latencies.sort()
    return {
        "plans_per_s": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "workers": workers,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "target_plans_per_s": 500,
    }


if __name__ == "__main__":
    dsn = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/postgres"
    print(asyncio.run(run(dsn)))
