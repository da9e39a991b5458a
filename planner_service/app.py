"""The planner FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from planexec.auth import ApiKeyStore
from planexec.db import create_engine, database_url_for
from planexec.db.notify import Notifier
from planexec.telemetry import setup_telemetry
from planexec.web.service_app import service_app

from .api import catalog as catalog_api
from .api import dispatch, health, plans
from .backends.base import PlannerBackend
from .backends.draft import DraftBackend
from .backends.openai_backend import OpenAIBackend
from .backends.template import TemplateBackend
from .catalog import CatalogService, CatalogUnavailableError
from .domain.policy import DEFAULT_POLICY_DIR, PolicyEngine
from .domain.redaction import Redactor
from .domain.validation import ValidationLimits
from .plan_service import PlanService
from .settings import PlannerSettings
from .store import PlanStore
from .store.catalogs import CatalogStore
from .store.dispatch import DispatchStore

_log = structlog.get_logger("planexec.planner")

API_DESCRIPTION = """\
Turns intents into versioned, validated, policy-checked JSON plans (DAGs of tool calls) and
keeps their provenance. Authenticate with an API key in the `X-API-Key` header. Every error is
an RFC 9457 `application/problem+json` body with a stable `type`.
"""


def create_app(settings: PlannerSettings) -> FastAPI:
    """Build the planner app from ``settings``; resources open and close with its lifespan."""
    telemetry = setup_telemetry("planexec-planner", settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = await asyncio.to_thread(database_url_for, settings)
        engine = create_engine(
            url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
        telemetry.instrument_engine(engine)
        app.state.engine = engine
        app.state.key_store = ApiKeyStore(engine, cache_ttl_s=settings.auth_cache_ttl_s)
        app.state.plan_store = PlanStore(engine)
        catalog = CatalogService(
            CatalogStore(engine),
            url=settings.catalog_url,
            file=settings.catalog_file,
            api_key=(
                settings.service_api_key.get_secret_value() if settings.service_api_key else None
            ),
        )
        app.state.catalog = catalog
        policy_dirs = [DEFAULT_POLICY_DIR] + ([settings.policy_dir] if settings.policy_dir else [])
        policy = PolicyEngine(policy_dirs)
        app.state.plan_service = PlanService(
            store=app.state.plan_store,
            catalog=catalog,
            policy=policy,
            backends=build_backends(settings),
            default_backend=settings.default_backend,
            signing_key=settings.signing_key_bytes,
            redactor=Redactor(settings.redact_patterns),
            limits=ValidationLimits(
                max_steps=settings.max_steps, max_depth=settings.max_plan_depth
            ),
            max_repairs=settings.max_repairs,
            max_intent_bytes=settings.max_intent_bytes,
            max_json_depth=settings.max_json_depth,
            cache_ttl_s=settings.cache_ttl_s,
        )
        app.state.dispatch_store = DispatchStore(engine)
        notifier = Notifier(url, ["planexec_dispatch"])
        await notifier.start()
        app.state.notifier = notifier
        refresher = None
        try:
            await catalog.refresh()
        except CatalogUnavailableError as exc:
            _log.warning("catalog_unavailable", error=str(exc))
        if settings.catalog_url:
            refresher = asyncio.create_task(catalog.run_refresh_loop(settings.catalog_refresh_s))
        _log.info(
            "planner_ready",
            docs=f"http://{settings.host}:{settings.port}/docs",
            policy_version=policy.policy_version,
        )
        try:
            yield
        finally:
            if refresher is not None:
                refresher.cancel()
            await notifier.stop()
            await engine.dispose()

    return service_app(
        title="planexec-planner",
        description=API_DESCRIPTION,
        settings=settings,
        lifespan=lifespan,
        routers=[health.router, plans.router, catalog_api.router, dispatch.router],
        telemetry=telemetry,
    )


def build_backends(settings: PlannerSettings) -> dict[str, PlannerBackend]:
    """The configured backends.

    ``template`` and ``draft`` always; ``openai`` when an LLM server or key is configured.
    """
    backends: dict[str, PlannerBackend] = {
        "template": TemplateBackend(settings.templates_dir),
        "draft": DraftBackend(),
    }
    if settings.llm_base_url or settings.llm_api_key:
        backends["openai"] = OpenAIBackend(
            base_url=settings.llm_base_url or "https://api.openai.com/v1",
            api_key=(settings.llm_api_key.get_secret_value() if settings.llm_api_key else "unused"),
            model=settings.llm_model,
            timeout_s=settings.llm_timeout_s,
            seed=settings.llm_seed,
            catalog_token_budget=settings.llm_prompt_token_budget,
        )
    return backends
