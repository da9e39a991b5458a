"""The executor FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from planexec.auth import ApiKeyStore
from planexec.db import create_engine, database_url_for
from planexec.db.pg import create_pool
from planexec.telemetry import setup_telemetry
from planexec.web.service_app import service_app

from . import ui
from .api import health, operator, runs
from .planner_client import PlannerClient
from .settings import ExecutorSettings
from .store.operator import OperatorActions
from .store.queries import RunQueries
from .store.runs import RunStore
from .tools.registry import HttpConfig, LlmConfig, build_registry

_log = structlog.get_logger("planexec.executor")

API_DESCRIPTION = """\
Runs validated plans durably against tool adapters: retries, timeouts, idempotency keys,
approval gates, output verification. Authenticate with an API key in `X-API-Key`. Every error
is an RFC 9457 `application/problem+json` body with a stable `type`.
"""


def http_config(settings: ExecutorSettings) -> HttpConfig:
    """Network policy for HTTP tools from the ``PLANEXEC_HTTP_*`` settings."""
    return HttpConfig(
        allow_networks=settings.http_allow_networks,
        allow_ports=settings.http_allow_ports,
        allow_hosts=settings.http_allow_hosts,
        max_response_bytes=settings.max_output_bytes,
    )


def llm_config(settings: ExecutorSettings) -> LlmConfig | None:
    """The ``llm.complete`` model server, when one is configured."""
    if not (settings.llm_base_url or settings.llm_api_key):
        return None
    return LlmConfig(
        base_url=settings.llm_base_url or "https://api.openai.com/v1",
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else "unused",
        model=settings.llm_model,
    )


def planner_client(settings: ExecutorSettings) -> PlannerClient | None:
    """A client of the planner, when its URL and the service key are configured."""
    if not settings.planner_url or settings.service_api_key is None:
        return None
    return PlannerClient(settings.planner_url, settings.service_api_key.get_secret_value())


def create_app(settings: ExecutorSettings) -> FastAPI:
    """Build the executor API from ``settings``; resources open and close with its lifespan."""
    telemetry = setup_telemetry("planexec-executor", settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = await asyncio.to_thread(database_url_for, settings)
        engine = create_engine(
            url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
        telemetry.instrument_engine(engine)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(engine.dispose)
            app.state.engine = engine
            app.state.key_store = ApiKeyStore(engine, cache_ttl_s=settings.auth_cache_ttl_s)
            pool = await create_pool(
                url,
                max_size=settings.db_pool_size,
                command_timeout_s=settings.db_command_timeout_s,
                connect_timeout_s=settings.db_connect_timeout_s,
            )
            stack.push_async_callback(pool.close)
            app.state.run_store = RunStore(pool)
            app.state.queries = RunQueries(engine)
            app.state.operator = OperatorActions(engine)
            app.state.registry = await build_registry(
                settings.catalog_config,
                stack,
                http=http_config(settings),
                llm=llm_config(settings),
            )
            planner = planner_client(settings)
            if planner is not None:
                stack.push_async_callback(planner.aclose)
            app.state.planner = planner
            _log.info(
                "executor_ready",
                docs=f"http://{settings.executor_host}:{settings.executor_port}/docs",
                catalog_version=app.state.registry.catalog.catalog_version,
                tools=len(app.state.registry),
            )
            yield

    return service_app(
        title="planexec-executor",
        description=API_DESCRIPTION,
        settings=settings,
        lifespan=lifespan,
        routers=[health.router, runs.router, operator.router, ui.router],
        telemetry=telemetry,
    )
