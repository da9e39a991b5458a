"""The floor: run each step's body, then record its outcome with one committed ``INSERT``.

One asyncpg connection in autocommit, a table ``outcomes`` keyed on ``(run, step)``; each
step is one ``INSERT`` (one transaction, one commit). Nothing durable can cost less per
step on this Postgres, so the floor bounds every peer from below.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import asyncpg
import httpx2

from bench.peers.common import (
    WARMUP_RUNS,
    Commits,
    XactCounter,
    fresh_database,
    kind_of,
    noop_body,
    peer_main,
    run_peer_process,
    summarize,
)

AsyncBody = Callable[[], Awaitable[dict[str, Any]]]
_INSERT = "INSERT INTO outcomes (run, step, output) VALUES ($1, $2, $3::jsonb)"


def measure(
    admin_dsn: str, *, runs: int = 200, steps: int = 10, http_url: str | None
) -> dict[str, Any]:
    """Measure the floor in a child process; see :func:`bench.peers.common.summarize`.

    Raises:
        RuntimeError: when the child process fails.
    """
    return run_peer_process(__name__, admin_dsn, runs=runs, steps=steps, http_url=http_url)


def measure_here(
    admin_dsn: str, *, runs: int = 200, steps: int = 10, http_url: str | None
) -> dict[str, Any]:
    """Measure the floor in this process (needs no global state, so this is safe too)."""
    return asyncio.run(_measure(admin_dsn, runs, steps, http_url))


async def _flush(conn: asyncpg.Connection) -> None:
    # The backend flushes its pending stats before it answers this statement.
    await conn.execute("SELECT pg_stat_force_next_flush()")


async def _measure(admin_dsn: str, runs: int, steps: int, http_url: str | None) -> dict[str, Any]:
    async with httpx2.AsyncClient() as client:

        async def http_body() -> dict[str, Any]:
            assert http_url is not None
            response = await client.get(http_url)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

        async def async_noop() -> dict[str, Any]:
            return noop_body()

        body: AsyncBody = async_noop if http_url is None else http_body
        with fresh_database(admin_dsn, "floor") as (dbname, url):
            conn = await asyncpg.connect(url)
            counter = XactCounter(admin_dsn, dbname)
            try:
                await conn.execute(
                    "CREATE TABLE outcomes (run int, step int, output jsonb NOT NULL,"
                    " PRIMARY KEY (run, step))"
                )

                async def run_once(run: int) -> None:
                    for step in range(steps):
                        output = await body()
                        await conn.execute(_INSERT, run, step, json.dumps(output))

                for run in range(WARMUP_RUNS):
                    await run_once(-1 - run)
                await _flush(conn)
                before, started = counter.read(), time.monotonic()
                run_seconds: list[float] = []
                cpu_start = time.process_time()
                for run in range(runs):
                    start = time.perf_counter()
                    await run_once(run)
                    run_seconds.append(time.perf_counter() - start)
                cpu_seconds = time.process_time() - cpu_start
                await _flush(conn)
                after, elapsed = counter.read(), time.monotonic() - started
            finally:
                await conn.close()
                counter.close()
        body_seconds = await _time_async_body(body, runs * steps)
    return summarize(
        name="floor (asyncpg INSERT per step)",
        version=f"asyncpg {version('asyncpg')}",
        kind=kind_of(http_url),
        steps=steps,
        run_seconds=run_seconds,
        body_seconds=body_seconds,
        cpu_seconds=cpu_seconds,
        commits=Commits(
            total=after - before - 1,  # less the second flush request's own commit
            elapsed_s=elapsed,
            background_per_s=None,
            method="pg_stat_force_next_flush() on the one connection",
        ),
    )


async def _time_async_body(body: AsyncBody, calls: int) -> list[float]:
    for _ in range(min(calls, 20)):
        await body()
    out: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        await body()
        out.append(time.perf_counter() - start)
    return out


if __name__ == "__main__":
    peer_main(measure_here)
