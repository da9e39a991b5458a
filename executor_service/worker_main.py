"""The ``planexec worker`` process: a ``Worker`` with its tools, store and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import replace

import structlog

from planexec.db import database_url_for
from planexec.db.notify import Notifier
from planexec.db.pg import create_pool
from planexec.telemetry import serve_metrics, setup_telemetry

from .app import http_config, llm_config, planner_client
from .engine.driver import DriverConfig
from .engine.faults import parse_fault
from .engine.slots import slot_gate
from .engine.webhook import GateWebhook
from .engine.worker import Worker, worker_id
from .settings import ExecutorSettings
from .store.runs import RunStore
from .tools.registry import build_registry

_log = structlog.get_logger("planexec.executor.worker")


async def run_worker(settings: ExecutorSettings, *, concurrency: int | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT, then drain (``settings.drain_s``).

    A signal that arrives while the worker is still starting stops it as soon as it is up.
    Prometheus ``/metrics`` is served on ``settings.metrics_port`` when set.
    """
    setup_telemetry("planexec-worker", settings)
    if settings.metrics_port is not None:
        serve_metrics(settings.metrics_host, settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await asyncio.to_thread(database_url_for, settings)
    async with contextlib.AsyncExitStack() as stack:
        registry = await build_registry(
            settings.catalog_config, stack, http=http_config(settings), llm=llm_config(settings)
        )
        pool = await create_pool(
            url,
            max_size=settings.db_pool_size,
            command_timeout_s=settings.db_command_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
        )
        stack.push_async_callback(pool.close)
        notifier = Notifier(url, ["planexec_runs"], connect_timeout_s=settings.db_connect_timeout_s)
        await notifier.start()
        stack.push_async_callback(notifier.stop)
        planner = planner_client(settings)
        if planner is not None:
            stack.push_async_callback(planner.aclose)
        config = driver_config(settings)
        gate = await slot_gate(
            settings.tool_concurrency, settings.tenant_tool_concurrency, pool, url, stack
        )
        config = replace(config, slots=gate)
        webhook = None
        if settings.approval_webhook_url:
            webhook = GateWebhook(settings.approval_webhook_url, settings.signing_key_bytes)
            stack.push_async_callback(webhook.aclose)
        worker = Worker(
            store=RunStore(pool),
            registry=registry,
            notifier=notifier,
            config=config,
            concurrency=concurrency or settings.worker_concurrency,
            step_concurrency=settings.step_concurrency,
            poll_s=settings.poll_s,
            drain_s=settings.drain_s,
            planner=planner,
            signing_key=settings.signing_key_bytes,
            accepted_schema_ids=tuple(settings.accepted_schema_ids),
            dispatch_wait_s=settings.dispatch_wait_s,
            liveness_file=settings.liveness_file,
            webhook=webhook,
            run_budget_usd=settings.run_budget_usd,
        )
        stopper = asyncio.create_task(_stop_on(stop, worker))
        _log.info(
            "worker_ready",
            worker=worker.id,
            tools=len(registry),
            catalog_version=registry.catalog.catalog_version,
            planner=settings.planner_url,
        )
        await worker.run()
        stopper.cancel()
        _log.info("worker_stopped", worker=worker.id)


def driver_config(settings: ExecutorSettings) -> DriverConfig:
    """The run driver's limits and timings from the settings."""
    return DriverConfig(
        worker_id=worker_id(),
        lease_ttl_s=settings.lease_ttl_s,
        heartbeat_s=settings.heartbeat_interval_s,
        max_output_bytes=settings.max_output_bytes,
        max_recoveries=settings.max_recoveries,
        max_replans=settings.max_replans,
        approval_timeout_s=settings.approval_timeout_s,
        tenant_budget_usd=settings.tenant_budget_usd,
        fault=parse_fault(settings.fault),
    )


async def _stop_on(stop: asyncio.Event, worker: Worker) -> None:
    await stop.wait()
    worker.stop()
