"""S5 (OWASP API5 broken function-level authorization) on both services' real apps.

``RULES`` says, for every operation of both OpenAPI documents, who may call it: the roles of
``shared_schemas.Role`` (``admin`` holds them all), the executor's ``planexec:dispatch``
scope, any authenticated key, or anyone (health). A test keeps it in step with the documents,
so a new route needs a decision. Then, on a real database:

- a key lacking the rule's roles gets 403 ``forbidden`` naming the role, whatever other roles
  it holds, and so does a service key holding only the dispatch scope; a key with one of the
  roles (or ``admin``) gets past the check. Planning (``createPlan``, ``revisePlan``) needs
  ``submitter`` or ``operator``: the roles defaults.cedar lets plan (an approver-only key used
  to get a stored, rejected plan, after spending generation on it).
- tenant keys, ``admin`` included, get 403 on the dispatch routes.
- on a run paused at an approval gate, submitters and operators cannot approve or reject,
  approvers cannot cancel, resolve, resume, retry, fork or replay; nothing changes until an
  approver approves.
- neither service serves key-management or other admin routes over HTTP (keys are managed
  with ``planexec keys``, which needs the database itself): such paths are 404 to an admin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI

from executor_service.store.queries import RunQueries
from executor_service.tools.noop import NoopTool
from shared_schemas import Role

from ..conftest import Keys
from ..integration.engine_env import engine_env
from .test_auth import (
    SERVICES,
    assert_problem,
    client,
    concrete,
    make_app,
    operations,
    request_kwargs,
    running,
)

OPEN, ANY, DISPATCH = "open", "any key", "planexec:dispatch"
PLANNING = frozenset({Role.SUBMITTER, Role.OPERATOR})
Rule = str | frozenset[Role]
RULES: dict[tuple[str, str, str], Rule] = {
    ("planner", "get", "/v1/healthz"): OPEN,
    ("planner", "post", "/v1/plans"): PLANNING,
    ("planner", "get", "/v1/plans"): ANY,
    ("planner", "post", "/v1/plans/{plan_id}/revisions"): PLANNING,
    ("planner", "get", "/v1/plans/{plan_id}"): ANY,
    ("planner", "get", "/v1/plans/{plan_id}/versions/{version}"): ANY,
    ("planner", "get", "/v1/plans/{plan_id}/versions/{version}/provenance"): ANY,
    ("planner", "get", "/v1/catalog"): ANY,
    ("planner", "post", "/v1/dispatch/claim"): DISPATCH,
    ("planner", "post", "/v1/dispatch/{dispatch_id}/ack"): DISPATCH,
    ("planner", "get", "/v1/dispatch/plans/{plan_id}/versions/{version}"): DISPATCH,
    ("planner", "post", "/v1/dispatch/plans/{plan_id}/revisions"): DISPATCH,
    ("executor", "get", "/v1/healthz"): OPEN,
    ("executor", "get", "/v1/tools"): ANY,
    ("executor", "post", "/v1/runs"): frozenset({Role.SUBMITTER}),
    ("executor", "get", "/v1/runs"): ANY,
    ("executor", "get", "/v1/runs/{run_id}"): ANY,
    ("executor", "get", "/v1/runs/{run_id}/events"): ANY,
    ("executor", "post", "/v1/runs/{run_id}/cancel"): frozenset({Role.OPERATOR}),
    ("executor", "post", "/v1/runs/{run_id}/steps/{step_id}/approval"): frozenset({Role.APPROVER}),
    ("executor", "post", "/v1/runs/{run_id}/steps/{step_id}/resolve"): frozenset({Role.OPERATOR}),
    ("executor", "post", "/v1/runs/{run_id}/resume"): frozenset({Role.OPERATOR}),
    ("executor", "post", "/v1/runs/{run_id}/retry"): frozenset({Role.OPERATOR}),
    ("executor", "post", "/v1/runs/{run_id}/fork"): frozenset({Role.OPERATOR}),
    ("executor", "post", "/v1/runs/{run_id}/replay"): frozenset({Role.OPERATOR}),
}
NON_ADMIN = [Role.SUBMITTER, Role.APPROVER, Role.OPERATOR]


@pytest.fixture
async def apps(db_url: str, demo_catalog_file: Path) -> AsyncIterator[dict[str, FastAPI]]:
    built = {s: make_app(s, db_url, demo_catalog_file, auth_failure_limit=None) for s in SERVICES}
    async with running(built["planner"]), running(built["executor"]):
        yield built


async def call(
    http: httpx2.AsyncClient, method: str, path: str, op: dict[str, Any], key: str
) -> httpx2.Response:
    return await http.request(
        method.upper(), concrete(path), headers={"X-API-Key": key}, **request_kwargs(path, op)
    )


def test_every_operation_has_a_rule(apps: dict[str, FastAPI]) -> None:
    documented = {
        (service, method, path)
        for service, app in apps.items()
        for method, path, _ in operations(app)
    }
    assert documented == set(RULES), "a route without a function-level rule: decide one"


async def test_each_operation_refuses_keys_without_its_roles_or_scope(
    apps: dict[str, FastAPI], keys: Keys
) -> None:
    key_of = {role: await keys.make("acme", role) for role in Role}
    all_but_admin = await keys.make("acme", *NON_ADMIN)
    scope_only = await keys.make("system", scopes=(DISPATCH,))
    service_key = await keys.make("system", Role.OPERATOR, scopes=(DISPATCH,))
    checked = 0
    for service, app in apps.items():
        async with client(app) as http:
            for method, path, op in operations(app):
                rule = RULES[(service, method, path)]
                if rule == OPEN:
                    continue
                where = (service, method, path)
                if rule == ANY:
                    allowed, refused = list(key_of.values()), []
                elif rule == DISPATCH:
                    allowed = [scope_only, service_key]
                    refused = [*key_of.values(), all_but_admin]
                else:
                    assert isinstance(rule, frozenset)
                    allowed = [key_of[r] for r in (*rule, Role.ADMIN)]
                    lacking = [r for r in NON_ADMIN if r not in rule]
                    refused = [key_of[r] for r in lacking]
                    refused.append(await keys.make("acme", *lacking))
                    refused.append(scope_only)
                for key in refused:
                    response = await call(http, method, path, op, key)
                    body = assert_problem(response, 403, "forbidden")
                    needed = DISPATCH if rule == DISPATCH else "role is required"
                    assert needed in body["detail"], (where, body)
                    checked += 1
                for key in allowed:
                    response = await call(http, method, path, op, key)
                    assert response.status_code not in (401, 403, 500), (
                        where,
                        response.status_code,
                        response.text[:300],
                    )
    assert checked >= 40


async def test_no_admin_routes_are_served(apps: dict[str, FastAPI], keys: Keys) -> None:
    admin = {"X-API-Key": await keys.make("acme", Role.ADMIN, scopes=(DISPATCH,))}
    for service, app in apps.items():
        for _, path, _ in operations(app):
            assert not any(word in path for word in ("key", "admin", "polic", "tenant")), path
        async with client(app) as http:
            for method, path in [
                ("GET", "/v1/keys"),
                ("POST", "/v1/keys"),
                ("GET", "/v1/api-keys"),
                ("GET", "/v1/admin/keys"),
                ("DELETE", "/v1/keys/abc"),
                ("PUT", "/v1/catalog"),
                ("POST", "/v1/catalog"),
            ]:
                response = await http.request(method, path, headers=admin, json={})
                assert response.status_code in (404, 405), (service, method, path)


GATED: list[dict[str, Any]] = [
    {"id": "look", "tool": "noop", "args": {"value": 1}},
    {
        "id": "send",
        "tool": "noop",
        "args": {"value": 2},
        "depends_on": ["look"],
        "requires_approval": True,
    },
]
OPERATOR_ACTIONS: list[tuple[str, dict[str, Any] | None]] = [
    ("cancel", None),
    ("steps/send/resolve", {"action": "mark_succeeded", "output": {"ok": True}}),
    ("resume", None),
    ("retry", None),
    ("fork", {"from_step": "look"}),
    ("replay", None),
]


async def _state(queries: RunQueries, run_id: Any) -> tuple[Any, ...]:
    run = await queries.get_run("acme", run_id)
    assert run is not None
    steps = {s["step_id"]: s["status"] for s in run["steps"]}
    runs, _ = await queries.list_runs("acme", status=None, plan_id=None, limit=50, cursor=None)
    return run["status"], run["cancel_requested"], steps, run["approvals"], len(runs)


async def test_a_gated_run_is_decided_only_by_approvers(
    db_url: str, apps: dict[str, FastAPI], keys: Keys
) -> None:
    submitter = {"X-API-Key": keys.acme_submitter}
    operator = {"X-API-Key": await keys.make("acme", Role.OPERATOR, Role.SUBMITTER)}
    approver = {"X-API-Key": keys.acme_approver}
    async with engine_env(db_url, [NoopTool()]) as env:
        run_id = await env.start(GATED)
        await env.wait_status(run_id, {"paused"})
        before = await _state(env.queries, run_id)
        async with client(apps["executor"]) as http:
            base = f"/v1/runs/{run_id}"
            for headers in (submitter, operator):
                for decision in ("approve", "reject"):
                    response = await http.post(
                        f"{base}/steps/send/approval", json={"decision": decision}, headers=headers
                    )
                    assert "approver role" in assert_problem(response, 403, "forbidden")["detail"]
            for action, body in OPERATOR_ACTIONS:
                for headers in (submitter, approver):
                    response = await http.post(f"{base}/{action}", json=body, headers=headers)
                    assert "operator role" in assert_problem(response, 403, "forbidden")["detail"]
            assert await _state(env.queries, run_id) == before
            approved = await http.post(
                f"{base}/steps/send/approval", json={"decision": "approve"}, headers=approver
            )
            assert (approved.status_code, approved.json()["recorded"]) == (200, True)
        run = await env.wait_status(run_id, {"succeeded"})
        assert [a["decision"] for a in run["approvals"]] == ["approve"]
