"""planexec's per-step orchestration cost: a 10-step sequential plan, run after run.

Each run is created (one statement), leased (one statement) and driven by a ``RunDriver`` on
a real database, exactly as a worker does, minus the worker's idle wait; per-step time is the
run's wall time / steps. Commits come from ``pg_stat_database.xact_commit`` of the bench
database, read from the admin database so the reads do not count.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from typing import Any

import asyncpg
import httpx2

from executor_service.engine.driver import DriverConfig, RunDriver
from executor_service.store.runs import RunStore
from executor_service.tools.base import ToolAdapter
from executor_service.tools.noop import NoopTool
from executor_service.tools.openapi_import import import_openapi
from executor_service.tools.registry import ToolRegistry
from planexec.db import upgrade
from planexec.db.pg import create_pool
from shared_schemas import Plan, PlannerInfo, PolicyDecision, Step, seal

KEY = b"b" * 40


def _noop_http_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "bench loopback tool", "version": "1"},
        "paths": {
            "/noop": {
                "get": {
                    "operationId": "noop",
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }


def _plan(registry: ToolRegistry, tool: str, steps: int) -> Plan:
    plan = Plan(
        plan_id=uuid.uuid4(),
        version=1,
        intent="bench",
        tenant="bench",
        created_by="bench",
        steps=[
            Step(id=f"s{i}", tool=tool, depends_on=[f"s{i - 1}"] if i else []) for i in range(steps)
        ],
        catalog_version=registry.catalog.catalog_version,
        policy_version="sha256:" + "0" * 64,
        planner=PlannerInfo(backend="draft"),
    )
    return seal(plan, KEY)


async def _xact(admin: Any, name: str, pool: Any, size: int) -> int:
    """Commits of the bench database so far, minus the flushes this call makes.

    Backends report statistics asynchronously; ``pg_stat_force_next_flush()`` on every pool
    connection (held at once) makes them report before the read. Each flush is itself one
    commit, subtracted here.
    """
    held = [await pool.acquire() for _ in range(size)]
    try:
        for conn in held:
            await conn.execute("SELECT pg_stat_force_next_flush()")
    finally:
        for conn in held:
            await pool.release(conn)
    value = await admin.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name
    )
    return int(value) - size


async def _measure(
    admin_dsn: str, *, runs: int, steps: int, http_url: str | None
) -> dict[str, Any]:
    name = f"planexec_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    engine = None
    try:
        await asyncio.to_thread(upgrade, url)
        engine = await create_pool(url, min_size=2, max_size=2)
        store = RunStore(engine)
        async with contextlib.AsyncExitStack() as stack:
            adapters: list[ToolAdapter] = [NoopTool()]
            tool = "noop"
            if http_url is not None:
                client = httpx2.AsyncClient()
                stack.push_async_callback(client.aclose)
                result = import_openapi(
                    _noop_http_document(), prefix="bench", base_url=http_url, client=client
                )
                adapters += result.tools
                tool = "bench.noop"
            registry = ToolRegistry(adapters)
            config = DriverConfig(
                "bench-worker", lease_ttl_s=60, heartbeat_s=60, max_output_bytes=1_048_576
            )
            slots = asyncio.Semaphore(16)

            async def one() -> float:
                plan = _plan(registry, tool, steps)
                decisions = [
                    PolicyDecision(step_id=s.id, tool=s.tool, decision="allow") for s in plan.steps
                ]
                t0 = time.perf_counter()
                await store.create_run(plan, decisions, created_by="bench")
                [claimed] = await store.claim_runs("bench-worker", limit=1, ttl_s=60)
                status = await RunDriver(claimed, store, registry.get, config, slots).drive()
                elapsed = time.perf_counter() - t0
                assert status is not None and status.value == "succeeded", status
                return elapsed

            for _ in range(5):  # warm-up: connections, caches, JIT of nothing
                await one()
            before = await _xact(admin, name, engine, 2)
            samples = [await one() for _ in range(runs)]
            after = await _xact(admin, name, engine, 2)
    finally:
        if engine is not None:
            await engine.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    per_step = sorted(s * 1000 / steps for s in samples)
    return {
        "name": "planexec",
        "kind": "noop" if http_url is None else "http",
        "runs": runs,
        "steps": steps,
        "per_step_ms": {
            "median": round(statistics.median(per_step), 3),
            "p99": round(per_step[min(len(per_step) - 1, int(len(per_step) * 0.99))], 3),
        },
        "steps_per_s": round(runs * steps / sum(samples), 1),
        "commits_per_step": round((after - before) / (runs * steps), 3),
    }


def measure(
    admin_dsn: str, *, runs: int = 200, steps: int = 10, http_url: str | None = None
) -> dict[str, Any]:
    """Per-step figures of planexec for a ``steps``-step sequential plan (see module doc)."""
    return asyncio.run(_measure(admin_dsn, runs=runs, steps=steps, http_url=http_url))


if __name__ == "__main__":
    print(measure("postgresql://postgres@127.0.0.1:5432/postgres", runs=100))
