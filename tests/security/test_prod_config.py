"""S8 (RELIABILITY §3, OWASP API8 Security Misconfiguration): what ``env=prod`` serves.

Both apps are built from ``env=prod`` settings (a real signing key, nothing else set) and run
with their lifespan entered on a real database, then asked over HTTP (in process):

* debug is off and an unexpected exception inside a route is a 500 ``internal`` problem that
  shows no traceback, exception type, message or source path;
* CORS is locked: no ``Access-Control-Allow-*`` header answers a cross-origin request or a
  CORS preflight, whatever the ``Origin``;
* the docs routes (``/docs``, ``/docs/oauth2-redirect``, ``/redoc``, ``/openapi.json``) are
  404 problems, unless a deployment sets ``PLANEXEC_DOCS_ENABLED`` explicitly;
* test-only and placeholder settings are refused: the executor's fault injection
  (``PLANEXEC_FAULT``) and the shipped placeholder or a short signing key.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from executor_service.app import create_app as create_executor_app
from executor_service.settings import ExecutorSettings
from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from planexec.settings import PLACEHOLDER_SECRET
from planexec.web.service_app import docs_served
from planner_service.app import create_app as create_planner_app
from planner_service.settings import PlannerSettings
from shared_schemas import Role

from .. import pg

SIGNING_KEY = "prod-signing-key-" + "s" * 32
SECRET_MARKER = "s8-secret-marker"
"""Text of the exception raised inside a route; it must not reach the response."""
DOCS_ROUTES = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
ORIGINS = ("https://evil.example", "null", "http://localhost:3000")
SERVICES = ("planner", "executor")


def _without_planexec_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PLANEXEC_")]:
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_planexec_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, not from the ``PLANEXEC_*`` environment."""
    _without_planexec_environment(monkeypatch)


def _prod_app(service: str, database_url: str, catalog_file: Path | None = None) -> FastAPI:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _without_planexec_environment(monkeypatch)
        return _build(service, database_url, catalog_file)


def _build(service: str, database_url: str, catalog_file: Path | None) -> FastAPI:
    if service == "planner":
        return create_planner_app(
            PlannerSettings(
                env="prod",
                database_url=database_url,
                signing_key=SIGNING_KEY,
                catalog_file=catalog_file,
                _env_file=None,
            )
        )
    return create_executor_app(
        ExecutorSettings(
            env="prod", database_url=database_url, signing_key=SIGNING_KEY, _env_file=None
        )
    )


async def _boom() -> None:
    raise RuntimeError(f"{SECRET_MARKER}: password=hunter2 at /srv/planexec/secret.py")


@pytest.fixture(scope="module")
async def prod_db(databases: pg.TestDatabases) -> AsyncIterator[str]:
    """One migrated database both prod apps share."""
    url = await databases.clone()
    try:
        yield url
    finally:
        await databases.drop(url)


@pytest.fixture(scope="module")
async def api_key(prod_db: str) -> str:
    """A key of tenant ``acme`` with every role."""
    engine = create_engine(prod_db, pool_size=1, max_overflow=0)
    try:
        issued = await ApiKeyStore(engine).create(
            tenant="acme", subject="s8", roles=tuple(Role), scopes=()
        )
        return issued.token
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=SERVICES)
async def prod(
    request: pytest.FixtureRequest, prod_db: str, demo_catalog_file: Path
) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of one service's ``env=prod`` app, lifespan entered.

    The app gets one extra route, ``GET /__s8_boom``, that raises an unexpected exception:
    the real middleware and handlers decide what the caller sees.
    """
    service: str = request.param
    app = _prod_app(service, prod_db, demo_catalog_file)
    app.add_api_route("/__s8_boom", _boom, methods=["GET"], include_in_schema=False)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(transport=transport, base_url=f"http://{service}") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def _assert_problem(response: httpx2.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, object] = response.json()
    assert problem["status"] == status
    return problem


async def test_debug_is_off_and_an_unexpected_error_shows_no_stack_trace(
    prod: httpx2.AsyncClient,
) -> None:
    app: FastAPI = prod.app  # type: ignore[attr-defined]
    assert app.debug is False
    response = await prod.get("/__s8_boom", headers={"Accept": "text/html"})
    problem = _assert_problem(response, 500)
    assert problem["code"] == "internal"
    assert problem["detail"] == "An unexpected error occurred."
    for leak in (SECRET_MARKER, "hunter2", "RuntimeError", "Traceback", "/srv/", ".py", 'File "'):
        assert leak not in response.text, f"{leak!r} leaked: {response.text}"


@pytest.mark.parametrize("origin", ORIGINS)
async def test_cors_is_locked(prod: httpx2.AsyncClient, api_key: str, origin: str) -> None:
    """No origin is granted anything: not on a simple request, not on a preflight."""
    simple = [
        await prod.get("/v1/healthz", headers={"Origin": origin}),
        await prod.get("/v1/runs", headers={"Origin": origin, "X-API-Key": api_key}),
    ]
    preflight = await prod.options(
        "/v1/healthz",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-API-Key, Content-Type",
        },
    )
    assert simple[0].status_code == 200, simple[0].text
    _assert_problem(preflight, 405)
    for response in [*simple, preflight]:
        granted = [h for h in response.headers if h.lower().startswith("access-control-")]
        assert not granted, f"{response.request.method} {response.request.url}: {granted}"


@pytest.mark.parametrize("path", DOCS_ROUTES)
async def test_docs_routes_are_off(prod: httpx2.AsyncClient, path: str) -> None:
    _assert_problem(await prod.get(path), 404)


@pytest.mark.parametrize("service", SERVICES)
def test_docs_need_an_explicit_opt_in_in_prod(service: str) -> None:
    """Off by default in prod; ``PLANEXEC_DOCS_ENABLED=true`` is a deliberate choice."""
    cls = PlannerSettings if service == "planner" else ExecutorSettings
    common = {"env": "prod", "signing_key": SIGNING_KEY, "_env_file": None}
    assert docs_served(cls(**common)) is False  # type: ignore[arg-type]
    assert docs_served(cls(**common, docs_enabled=True)) is True  # type: ignore[arg-type]
    assert docs_served(cls(**(common | {"env": "dev"}))) is True  # type: ignore[arg-type]
    assert docs_served(cls(**(common | {"env": "dev"}), docs_enabled=False)) is False  # type: ignore[arg-type]


def test_fault_injection_is_refused_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PLANEXEC_FAULT`` (test-only) stops a prod executor from starting, from either source."""
    with pytest.raises(ValidationError, match="PLANEXEC_FAULT is for tests"):
        ExecutorSettings(
            env="prod", signing_key=SIGNING_KEY, fault="after_call:charge", _env_file=None
        )
    monkeypatch.setenv("PLANEXEC_ENV", "prod")
    monkeypatch.setenv("PLANEXEC_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("PLANEXEC_FAULT", "after_call:charge")
    with pytest.raises(ValidationError, match="PLANEXEC_FAULT is for tests"):
        ExecutorSettings(_env_file=None)
    monkeypatch.setenv("PLANEXEC_ENV", "test")
    assert ExecutorSettings(_env_file=None).fault == "after_call:charge"


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("key", [PLACEHOLDER_SECRET, "short-key"])
def test_placeholder_or_short_signing_key_is_refused_in_prod(service: str, key: str) -> None:
    cls = PlannerSettings if service == "planner" else ExecutorSettings
    with pytest.raises(ValidationError, match="PLANEXEC_SIGNING_KEY"):
        cls(env="prod", signing_key=key, _env_file=None)


@pytest.mark.parametrize("service", SERVICES)
def test_the_in_memory_span_exporter_is_refused_in_prod(service: str) -> None:
    """``otel_exporter=memory`` keeps every span in the process: tests only."""
    cls = PlannerSettings if service == "planner" else ExecutorSettings
    with pytest.raises(ValidationError, match="PLANEXEC_OTEL_EXPORTER=memory"):
        cls(env="prod", signing_key=SIGNING_KEY, otel_exporter="memory", _env_file=None)
    assert cls(env="test", signing_key=SIGNING_KEY, otel_exporter="memory", _env_file=None)
