"""S9 (RELIABILITY §3, OWASP API9 Improper Inventory Management): served routes == documented.

Every route an app serves is found by walking ``app.routes`` (FastAPI's included routers,
Starlette routes, mounts and the routes of mounted sub-apps). That set must equal the
operations of the OpenAPI document the app publishes plus ``UNDOCUMENTED``, an explicit
allow-list of routes left out of the document on purpose: the docs themselves, ``/metrics``
and the executor's HTML console. A route that is neither documented nor allow-listed (a
forgotten debug or test route, a shadow API) fails the test, and so does a documented
operation that nothing serves or an allow-list entry that no longer exists.

The repository keeps no committed OpenAPI documents (no ``openapi*.json`` under ``docs/`` or
``shared_schemas/``): the published document is the one each app serves at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Mount

from executor_service.app import create_app as create_executor_app
from executor_service.settings import ExecutorSettings
from planner_service.app import create_app as create_planner_app
from planner_service.settings import PlannerSettings

UNUSED_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/unused"
"""The apps are only inspected, never started: no database connection is made."""
SIGNING_KEY = "k" * 40
MOUNT = "MOUNT"
"""Method label of a mount whose app lists no routes (static files): it serves a subtree."""

Route = tuple[str, str]

DOCS: dict[Route, str] = {
    ("GET", "/openapi.json"): "the OpenAPI document itself",
    ("GET", "/docs"): "Swagger UI over that document",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI's OAuth2 redirect page",
}
"""Served only when docs are on (``planexec.web.service_app.docs_served``: off in prod)."""

COMMON: dict[Route, str] = {
    ("GET", "/metrics"): "Prometheus scrape target (text format, no API key, not an API)",
}

EXECUTOR_CONSOLE: dict[Route, str] = {
    # The operator console (executor_service/ui): server-rendered HTML pages and form posts
    # for people with a browser session (CSRF-protected), not API operations. Each one acts
    # through the same stores as the documented /v1 routes.
    ("GET", "/ui/"): "console home, redirects to the run list",
    ("GET", "/ui/login"): "login page (paste an API key)",
    ("POST", "/ui/login"): "login form",
    ("POST", "/ui/logout"): "logout form",
    ("GET", "/ui/runs"): "run list page",
    ("GET", "/ui/runs/{run_id}"): "run page (DAG, timeline, steps)",
    ("GET", "/ui/runs/{run_id}/stream"): "the run page's live updates (SSE of HTML fragments)",
    ("POST", "/ui/runs/{run_id}/cancel"): "form for POST /v1/runs/{run_id}/cancel",
    ("POST", "/ui/runs/{run_id}/retry"): "form for POST /v1/runs/{run_id}/retry",
    ("POST", "/ui/runs/{run_id}/fork"): "form for POST /v1/runs/{run_id}/fork",
    ("POST", "/ui/runs/{run_id}/resume"): "form for POST /v1/runs/{run_id}/resume",
    ("POST", "/ui/runs/{run_id}/steps/{step_id}/resolve"): "form for .../resolve",
    ("GET", "/ui/approvals"): "approvals inbox page",
    ("POST", "/ui/approvals/{run_id}/{step_id}"): "form for .../approval",
    ("GET", "/ui/plans"): "plan list page",
    ("GET", "/ui/plans/{plan_id}"): "plan page (versions, diffs, provenance)",
    (MOUNT, "/ui/static"): "the console's stylesheet and vendored htmx scripts",
}


def undocumented(service: str, *, docs: bool) -> dict[Route, str]:
    """The allow-list of ``service``: routes it serves on purpose outside its document."""
    allowed = COMMON | (DOCS if docs else {})
    return allowed | (EXECUTOR_CONSOLE if service == "executor" else {})


def _app(service: str, env: str) -> FastAPI:
    common: dict[str, Any] = {
        "env": env,
        "database_url": UNUSED_DB,
        "signing_key": SIGNING_KEY,
        "_env_file": None,
    }
    if service == "planner":
        return create_planner_app(PlannerSettings(**common))
    return create_executor_app(ExecutorSettings(**common))


def served_routes(routes: list[BaseRoute], prefix: str = "") -> set[Route]:
    """``(METHOD, path)`` of every route reachable through ``routes``.

    Included routers are flattened (``fastapi.routing.iter_route_contexts``); a mount of an
    app with routes is walked under its prefix, a mount of anything else (static files) is
    one ``(MOUNT, path)`` entry; a websocket route is ``("WEBSOCKET", path)``. ``HEAD``, which
    Starlette adds to every ``GET`` route, is left out.
    """
    found: set[Route] = set()
    for context in iter_route_contexts(routes):
        route = context.original_route
        path = prefix + (context.path or "")
        if isinstance(route, Mount):
            inner = list(route.routes)
            found |= served_routes(inner, path) if inner else {(MOUNT, path)}
            continue
        methods = context.methods
        if methods is None:
            found.add(("WEBSOCKET", path))
            continue
        found |= {(m, path) for m in methods if not (m == "HEAD" and "GET" in methods)}
    return found


def documented_operations(document: dict[str, Any]) -> set[Route]:
    """``(METHOD, path)`` of every operation of an OpenAPI document."""
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {
        (method.upper(), path)
        for path, item in document.get("paths", {}).items()
        for method in item
        if method in methods
    }


def inventory_diff(app: FastAPI, document: dict[str, Any], allowed: dict[Route, str]) -> str:
    """Empty when the served routes are exactly the document's operations plus ``allowed``."""
    served = served_routes(list(app.routes))
    documented = documented_operations(document)
    problems = []
    if shadow := served - documented - allowed.keys():
        problems.append(f"served but neither documented nor allow-listed: {sorted(shadow)}")
    if ghosts := documented - served:
        problems.append(f"documented but not served: {sorted(ghosts)}")
    if stale := allowed.keys() - served:
        problems.append(f"allow-listed but not served (stale entry): {sorted(stale)}")
    if both := allowed.keys() & documented:
        problems.append(f"allow-listed and documented (drop the entry): {sorted(both)}")
    return "\n".join(problems)


async def _published_document(app: FastAPI) -> dict[str, Any]:
    """The document the app serves at ``/openapi.json``."""
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://inventory") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("service", ["planner", "executor"])
async def test_served_routes_are_the_published_document_plus_the_allow_list(
    service: str,
) -> None:
    app = _app(service, "test")
    document = await _published_document(app)
    assert document == app.openapi()
    assert len(documented_operations(document)) >= 10
    diff = inventory_diff(app, document, undocumented(service, docs=True))
    assert not diff, diff


@pytest.mark.parametrize("service", ["planner", "executor"])
def test_prod_serves_the_document_s_operations_without_the_docs(service: str) -> None:
    """With ``env=prod`` the docs routes are gone and nothing else changes."""
    app = _app(service, "prod")
    document = app.openapi()
    assert document == _app(service, "test").openapi()
    diff = inventory_diff(app, document, undocumented(service, docs=False))
    assert not diff, diff


def test_a_new_undocumented_route_or_mount_fails_the_inventory() -> None:
    """The check bites: hidden routes, hidden mounts and sub-apps are all reported."""
    app = _app("planner", "test")
    document = app.openapi()
    allowed = undocumented("planner", docs=True)
    assert inventory_diff(app, document, allowed) == ""

    async def debug() -> dict[str, str]:
        return {}

    app.add_api_route("/v1/debug/env", debug, methods=["GET"], include_in_schema=False)
    sub = FastAPI()
    sub.add_api_route("/dump", debug, methods=["POST"])
    app.mount("/internal", sub)
    app.mount("/files", StaticFiles(directory="/nonexistent", check_dir=False))
    diff = inventory_diff(app, document, allowed)
    assert "('GET', '/v1/debug/env')" in diff, diff
    assert "('POST', '/internal/dump')" in diff, diff
    assert "('MOUNT', '/files')" in diff, diff
    assert "stale" not in diff and "not served" not in diff, diff


def test_a_documented_operation_nothing_serves_fails_the_inventory() -> None:
    app = _app("executor", "test")
    document = app.openapi()
    document = {**document, "paths": {**document["paths"], "/v1/ghost": {"get": {}}}}
    diff = inventory_diff(app, document, undocumented("executor", docs=True))
    assert "documented but not served: [('GET', '/v1/ghost')]" in diff, diff
