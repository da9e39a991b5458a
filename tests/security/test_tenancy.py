"""S1 (OWASP API1 BOLA): another tenant's ids get 404 and no data on every executor route.

Tenant ``acme`` owns a finished run and a run paused at an approval gate. A ``globex`` key
holding every role then calls every route of the executor's OpenAPI document with acme's ids:
each answers 404 ``application/problem+json`` without acme data, the list filters answer
nothing, and acme's runs are unchanged afterwards. The same is checked on the SQL layer
(``RunQueries``, ``OperatorActions``), which keys every query by tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from executor_service.app import create_app
from executor_service.settings import ExecutorSettings
from executor_service.store.operator import OperatorActions
from executor_service.store.queries import RunQueries
from executor_service.tools.noop import NoopTool
from planexec.db import create_engine
from shared_schemas import Role

from ..conftest import Keys
from ..integration.engine_env import engine_env

OWNER, INTRUDER = "acme", "globex"
FINISHED_STEPS: list[dict[str, Any]] = [
    {"id": "look", "tool": "noop", "args": {"value": "acme-secret-1"}},
    {"id": "send", "tool": "noop", "args": {"value": 2}, "depends_on": ["look"]},
]
GATED_STEPS: list[dict[str, Any]] = [
    {"id": "look", "tool": "noop", "args": {"value": "acme-secret-2"}},
    {
        "id": "send",
        "tool": "noop",
        "args": {"value": 3},
        "depends_on": ["look"],
        "requires_approval": True,
    },
]

# Every executor route with a path parameter: (method, path template) -> JSON body. The
# bodies are valid, so a 404 comes from the tenancy check, not from request validation.
ID_ROUTES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("get", "/v1/runs/{run_id}"): None,
    ("get", "/v1/runs/{run_id}/events"): None,
    ("post", "/v1/runs/{run_id}/cancel"): None,
    ("post", "/v1/runs/{run_id}/steps/{step_id}/approval"): {"decision": "approve"},
    ("post", "/v1/runs/{run_id}/steps/{step_id}/resolve"): {
        "action": "mark_succeeded",
        "output": {"ok": True, "echo": "forged"},
    },
    ("post", "/v1/runs/{run_id}/resume"): None,
    ("post", "/v1/runs/{run_id}/retry"): None,
    ("post", "/v1/runs/{run_id}/fork"): {"from_step": "look"},
    ("post", "/v1/runs/{run_id}/replay"): None,
}
# Routes without an id, each checked elsewhere in this file or outside tenancy's reach.
OTHER_ROUTES = {
    ("get", "/v1/healthz"),  # no tenant data
    ("get", "/v1/tools"),  # the shared catalog, not tenant data
    ("get", "/v1/runs"),  # list: test_list_filters_show_nothing_of_another_tenant
    ("post", "/v1/runs"),  # takes a plan id; the planner fetch is keyed by tenant
}


@pytest.fixture
async def owner_runs(db_url: str) -> dict[str, Any]:
    """Acme's finished and paused runs, driven by a worker that is stopped afterwards."""
    async with engine_env(db_url, [NoopTool()]) as env:
        finished = await env.start(FINISHED_STEPS, tenant=OWNER)
        gated = await env.start(GATED_STEPS, tenant=OWNER)
        await env.wait_status(finished, {"succeeded"}, tenant=OWNER)
        await env.wait_status(gated, {"paused"}, tenant=OWNER)
        plan_ids = {
            str((await env.queries.get_run(OWNER, run))["plan_id"])  # type: ignore[index]
            for run in (finished, gated)
        }
    return {"finished": finished, "gated": gated, "plan_ids": plan_ids}


@pytest.fixture
async def executor(db_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_app(
        ExecutorSettings(database_url=db_url, env="test", signing_key="k" * 40, _env_file=None)
    )
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://executor") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def snapshot(db_url: str, run_ids: list[uuid.UUID]) -> dict[str, Any]:
    """Everything tenant B could have changed: runs, steps, approvals, events, run count."""
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    try:
        queries = RunQueries(engine)
        state: dict[str, Any] = {}
        for run_id in run_ids:
            run = await queries.get_run(OWNER, run_id)
            assert run is not None
            events = await queries.events(OWNER, run_id, 0)
            state[str(run_id)] = {
                "status": run["status"],
                "updated_at": run["updated_at"],
                "cancel_requested": run["cancel_requested"],
                "steps": {s["step_id"]: (s["status"], s["output"]) for s in run["steps"]},
                "approvals": run["approvals"],
                "events": [e["seq"] for e in events],
            }
        runs, _ = await queries.list_runs(OWNER, status=None, plan_id=None, limit=200, cursor=None)
        state["run_ids"] = sorted(str(r["run_id"]) for r in runs)
        return state
    finally:
        await engine.dispose()


def assert_not_found_without_data(response: httpx2.Response, owner_runs: dict[str, Any]) -> None:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == 404, (where, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), where
    body = response.json()
    assert body["status"] == 404, where
    text = response.text
    for leaked in (OWNER, "acme-secret", *owner_runs["plan_ids"]):
        assert leaked not in text, (where, leaked)


def test_every_id_route_in_the_openapi_document_is_covered(
    executor: httpx2.AsyncClient,
) -> None:
    paths: dict[str, dict[str, Any]] = executor.app.openapi()["paths"]  # type: ignore[attr-defined]
    documented = {
        (method, path)
        for path, operations in paths.items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }
    with_ids = {route for route in documented if "{" in route[1]}
    assert with_ids == set(ID_ROUTES), "a route with a path parameter lacks a tenancy test"
    assert documented - with_ids == OTHER_ROUTES, "a new route: decide how tenancy applies"


async def test_another_tenant_gets_404_and_no_data_on_every_route(
    db_url: str, executor: httpx2.AsyncClient, keys: Keys, owner_runs: dict[str, Any]
) -> None:
    run_ids = [owner_runs["finished"], owner_runs["gated"]]
    before = await snapshot(db_url, run_ids)
    intruder = {"X-API-Key": await keys.make(INTRUDER, *Role)}
    for run_id in run_ids:
        for (method, template), body in ID_ROUTES.items():
            path = template.format(run_id=run_id, step_id="send")
            params = {"follow": "false"} if path.endswith("/events") else None
            response = await executor.request(
                method.upper(), path, json=body, params=params, headers=intruder
            )
            assert_not_found_without_data(response, owner_runs)
        # SSE: a resumed stream (Last-Event-ID) and a following one are refused the same way.
        for params in ({"follow": "true", "after": "0"}, {"follow": "false"}):
            response = await executor.get(
                f"/v1/runs/{run_id}/events",
                params=params,
                headers=intruder | {"Last-Event-ID": "0", "Accept": "text/event-stream"},
            )
            assert_not_found_without_data(response, owner_runs)
    assert await snapshot(db_url, run_ids) == before

    # Control: the owner reaches the same ids, so the 404s above are the tenancy check.
    owner = {"X-API-Key": await keys.make(OWNER, *Role)}
    gated = owner_runs["gated"]
    detail = await executor.get(f"/v1/runs/{gated}", headers=owner)
    assert (detail.status_code, detail.json()["status"]) == (200, "paused")
    stream = await executor.get(
        f"/v1/runs/{gated}/events", params={"follow": "false"}, headers=owner
    )
    assert stream.status_code == 200
    assert "approval.requested" in stream.text
    approved = await executor.post(
        f"/v1/runs/{gated}/steps/send/approval", json={"decision": "approve"}, headers=owner
    )
    assert (approved.status_code, approved.json()["recorded"]) == (200, True)


async def test_list_filters_show_nothing_of_another_tenant(
    executor: httpx2.AsyncClient, keys: Keys, owner_runs: dict[str, Any]
) -> None:
    intruder = {"X-API-Key": await keys.make(INTRUDER, *Role)}
    owner = {"X-API-Key": await keys.make(OWNER, Role.SUBMITTER)}
    queries: list[dict[str, str]] = [{}, {"status": "paused"}, {"status": "succeeded"}]
    queries += [{"plan_id": plan_id} for plan_id in owner_runs["plan_ids"]]
    for params in queries:
        seen = await executor.get("/v1/runs", params=params, headers=intruder)
        assert seen.status_code == 200, seen.text
        assert seen.json() == {"items": [], "next_cursor": None}, params
        # Control: the same filter finds the owner's run.
        mine = await executor.get("/v1/runs", params=params, headers=owner)
        assert mine.json()["items"], params


async def test_queries_keyed_by_another_tenant_return_nothing(
    db_url: str, owner_runs: dict[str, Any]
) -> None:
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    queries, operator = RunQueries(engine), OperatorActions(engine)
    try:
        for run_id in (owner_runs["finished"], owner_runs["gated"]):
            assert await queries.get_run(OWNER, run_id) is not None  # control
            assert await queries.events(OWNER, run_id, 0)  # control
            assert await queries.get_run(INTRUDER, run_id) is None
            assert await queries.events(INTRUDER, run_id, 0) == []
            assert await queries.run_status(INTRUDER, run_id) is None
            assert await queries.cancel(INTRUDER, run_id) is None
            outcome = await queries.record_approval(
                INTRUDER, run_id, "send", decision="approve", by="globex-user", comment=None
            )
            assert (outcome.existing, outcome.gate) == (None, None)
            resolved = await operator.resolve_step(
                INTRUDER,
                run_id,
                "send",
                action="mark_succeeded",
                output={"ok": True, "echo": "forged"},
                by="globex-user",
                comment=None,
            )
            assert resolved is None
            assert await operator.resume(INTRUDER, run_id, "globex-user") is False
        for plan_id in owner_runs["plan_ids"]:
            page = await queries.list_runs(
                INTRUDER, status=None, plan_id=uuid.UUID(plan_id), limit=200, cursor=None
            )
            assert page == ([], None)
        gated = await queries.get_run(OWNER, owner_runs["gated"])
        assert gated is not None
        assert gated["status"] == "paused"
        assert gated["approvals"] == []
        assert not gated["cancel_requested"]
    finally:
        await engine.dispose()
