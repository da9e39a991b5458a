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


def docs_served(settings: CommonSettings) -> bool:
    """Whether ``/docs`` and ``/openapi.json`` are served (OWASP API8, RELIABILITY S8).

    ``docs_enabled`` (default true) decides, except that ``env=prod`` serves them only when
    ``PLANEXEC_DOCS_ENABLED`` is set explicitly: a production deployment does not publish its
    interactive docs by default.
    """
    if settings.env == "prod" and "docs_enabled" not in settings.model_fields_set:
        return False
    return settings.docs_enabled


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

    ``/docs`` and ``/openapi.json`` are served only when ``docs_served(settings)``; ``debug``
    is off, so an unexpected error is a 500 ``internal`` problem without a traceback. Every
    route refuses text Postgres cannot store (``planexec.web.text``).
    """
    docs = docs_served(settings)
    app = FastAPI(
        title=title,
        version="0.1.0",
        description=description,
        lifespan=lifespan,
        debug=False,
        dependencies=[Depends(refuse_unstorable_text)],
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
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
