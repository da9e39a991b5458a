"""An in-process executor engine on a real database, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from executor_service.engine.driver import DriverConfig
from executor_service.engine.pinning import pinned_specs
from executor_service.engine.webhook import GateWebhook
from executor_service.engine.worker import Worker
from executor_service.store.operator import OperatorActions
from executor_service.store.queries import RunQueries
from executor_service.store.runs import NewRun, RunStore
from executor_service.tools.base import ToolAdapter
from executor_service.tools.registry import ToolRegistry
from planexec.db import create_engine
from planexec.db.notify import Notifier
from planexec.db.pg import create_pool
from shared_schemas import Plan, PlannerInfo, PolicyDecision, Step, seal

KEY = b"k" * 40


def make_plan(steps: list[dict[str, Any]], registry: ToolRegistry, tenant: str = "acme") -> Plan:
    plan = Plan(
        plan_id=uuid.uuid4(),
        version=1,
        intent="test",
        tenant=tenant,
        created_by=f"{tenant}-user",
        steps=[Step.model_validate(s) for s in steps],
        catalog_version=registry.catalog.catalog_version,
        policy_version="sha256:" + "0" * 64,
        planner=PlannerInfo(backend="draft"),
    )
    return seal(plan, KEY)


@dataclass
class EngineEnv:
    store: RunStore
    queries: RunQueries
    registry: ToolRegistry
    engine: Any

    @property
    def operator(self) -> OperatorActions:
        return OperatorActions(self.engine)

    async def start(
        self, steps: list[dict[str, Any]], tenant: str = "acme", **new: Any
    ) -> uuid.UUID:
        plan = make_plan(steps, self.registry, tenant)
        return await self.start_plan(plan, **new)

    async def start_plan(self, plan: Plan, **new: Any) -> uuid.UUID:
        decisions = [
            PolicyDecision(step_id=s.id, tool=s.tool, decision="allow") for s in plan.steps
        ]
        new.setdefault("tool_specs", pinned_specs(plan, self.registry.get))
        run_id, created = await self.store.create_run(
            plan, decisions, created_by="tester", new=NewRun(**new)
        )
        assert created
        return run_id

    async def wait_status(
        self, run_id: uuid.UUID, statuses: set[str], timeout_s: float = 20.0, tenant: str = "acme"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = await self.queries.get_run(tenant, run_id)
            assert run is not None
            if run["status"] in statuses:
                return run
            await asyncio.sleep(0.05)
        raise AssertionError(f"run {run_id} not in {statuses}: {run['status']}")

    async def events(self, run_id: uuid.UUID, tenant: str = "acme") -> list[dict[str, Any]]:
        return await self.queries.events(tenant, run_id, 0)


@contextlib.asynccontextmanager
async def engine_env(
    db_url: str,
    adapters: list[ToolAdapter],
    *,
    workers: int = 1,
    lease_ttl_s: float = 10.0,
    heartbeat_s: float = 1.0,
    poll_s: float = 0.2,
    webhook_url: str | None = None,
    **config: Any,
) -> AsyncIterator[EngineEnv]:
    """Workers on ``db_url`` with ``adapters``; ``config`` overrides ``DriverConfig`` fields."""
    engine = create_engine(db_url, pool_size=5, max_overflow=5)
    registry = ToolRegistry(adapters)
    pool = await create_pool(db_url, max_size=10)
    notifier = Notifier(db_url, ["planexec_runs"])
    await notifier.start()
    running: list[tuple[Worker, asyncio.Task[None]]] = []
    webhook = GateWebhook(webhook_url, KEY) if webhook_url else None
    try:
        for i in range(workers):
            worker = Worker(
                store=RunStore(pool),
                registry=registry,
                notifier=notifier,
                config=DriverConfig(
                    f"test-worker-{i}", lease_ttl_s, heartbeat_s, 1_048_576, **config
                ),
                concurrency=8,
                step_concurrency=16,
                poll_s=poll_s,
                drain_s=2.0,
                webhook=webhook,
            )
            running.append((worker, asyncio.create_task(worker.run())))
        yield EngineEnv(RunStore(pool), RunQueries(engine), registry, engine)
    finally:
        for worker, _ in running:
            worker.stop()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)
        await notifier.stop()
        if webhook is not None:
            await webhook.aclose()
        await pool.close()
        await engine.dispose()
