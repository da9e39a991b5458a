"""The FastAPI application both services are built on: errors, limits, docs, metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, Depends, FastAPI

from planexec.settings import CommonSettings
from planexec.telemetry import Telemetry, install_metrics_route

from .limits import BodyLimitMiddleware, JsonShapeLimits
from .openapi import document_problem_schema
from .problems import install_problem_handlers
from .ratelimit import RateLimits
from .text import refuse_unstorable_text


def service_app(
    *,
    title: str,
    description: str,
    settings: CommonSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    routers: Sequence[APIRouter],
    telemetry: Telemetry,
) -> FastAPI:
    """A FastAPI app with planexec's problem+json errors, body limits, docs and ``/metrics``.

    ``/docs`` and ``/openapi.json`` are served only when ``settings.docs_enabled``. Every route
    refuses text Postgres cannot store (``planexec.web.text``).
    """
    app = FastAPI(
        title=title,
        version="0.1.0",
        description=description,
        lifespan=lifespan,
        dependencies=[Depends(refuse_unstorable_text)],
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    app.state.rate_limits = RateLimits.from_settings(settings)  # per process, see .ratelimit
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        shape=JsonShapeLimits(
            settings.max_body_depth, settings.max_body_items, settings.max_number_length
        ),
    )
    for router in routers:
        app.include_router(router)
    install_metrics_route(app)
    telemetry.instrument_app(app)
    document_problem_schema(app)
    return app
