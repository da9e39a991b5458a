"""The planner FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from planexec.auth import ApiKeyStore
from planexec.db import create_engine, database_url_for
from planexec.web import BodyLimitMiddleware, install_problem_handlers
from shared_schemas import ProblemDetails

from .api import health, plans
from .settings import PlannerSettings
from .store import PlanStore

_log = structlog.get_logger("planexec.planner")

API_DESCRIPTION = """\
Turns intents into versioned, validated, policy-checked JSON plans (DAGs of tool calls) and
keeps their provenance. Authenticate with an API key in the `X-API-Key` header. Every error is
an RFC 9457 `application/problem+json` body with a stable `type`.
"""


def create_app(settings: PlannerSettings) -> FastAPI:
    """Build the planner app from ``settings``; resources open and close with its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = await asyncio.to_thread(database_url_for, settings)
        engine = create_engine(
            url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
        app.state.engine = engine
        app.state.key_store = ApiKeyStore(engine)
        app.state.plan_store = PlanStore(engine)
        _log.info("planner_ready", docs=f"http://{settings.host}:{settings.port}/docs")
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="planexec-planner",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(plans.router)
    _document_problem_schema(app)
    return app


def _document_problem_schema(app: FastAPI) -> None:
    """Add ``ProblemDetails`` to the OpenAPI components so error responses can reference it."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ProblemDetails"] = ProblemDetails.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
