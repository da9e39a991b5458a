"""S4 (OWASP API4 unrestricted resource consumption): hostile bodies and tool responses.

What the other suites already prove is not repeated here: 413 over ``max_body_bytes``
(declared and streamed), the planner's ``max_intent_bytes``, ``max_json_depth`` (context),
``max_steps`` and ``no_nul``, I-JSON refusals of ``NaN``/``1e400``/unsafe integers in the
context (tests/integration/test_plans_api.py), the ``http.request`` tool's own response cap
and timeout (tests/integration/test_http_request_tool.py), step timeouts of the ``wait``
tool (tests/integration/test_engine.py) and max replans.

Here, on both services' real apps on a real database: bodies nested 100 000 deep, integer
literals of 5 000 digits (``10**5000``) in a body and in plan arguments, arrays and objects
of more items than allowed each get 422 ``limit-exceeded`` naming ``max_body_depth``,
``max_number_length`` or ``max_body_items``, fast and with nothing stored (FastAPI alone
answered these with an untyped 400). Bodies at the limits pass. Through the engine, a tool
whose loopback server answers with 2 MB (over the executor's ``max_output_bytes``, 1 MiB)
fails its step with ``output_too_large``, and one whose server never answers fails with
``timeout`` after ``timeout_s``; neither hangs the run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import text

from executor_service.app import create_app
from executor_service.settings import ExecutorSettings
from executor_service.tools.http_request import HttpRequestTool
from shared_schemas import Role

from ..conftest import Keys
from ..integration.engine_env import engine_env
from ..integration.test_http_request_tool import Canary, RecordingServer, loopback_policy

PROBLEM = "application/problem+json"
LIMIT_EXCEEDED = "https://planexec.dev/problems/limit-exceeded"
JSON = {"Content-Type": "application/json"}
RUN_ID = uuid.uuid4()


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def items(n: int) -> bytes:
    return b"[" + b",".join([b"0"] * n) + b"]"


def members(n: int) -> bytes:
    return json.dumps({f"k{i}": 0 for i in range(n)}).encode()


HUGE_INT = b"9" * 5000  # 10**5000 - 1: CPython will not even parse it (4300-digit cap)


def plan_body(context: bytes = b"{}", args: bytes = b"{}") -> bytes:
    return (
        b'{"intent": "x", "context": {"v": ' + context + b'}, "draft": {"steps": '
        b'[{"id": "a", "tool": "transform", "args": {"data": ' + args + b', "expression": "@"}}]}}'
    )


PLANNER_BOMBS: dict[str, tuple[bytes, str]] = {
    "arrays 100000 deep": (plan_body(context=nested_arrays(100_000)), "max_body_depth"),
    "objects 50000 deep": (plan_body(context=nested_objects(50_000)), "max_body_depth"),
    "arrays 65 deep in args": (plan_body(args=nested_arrays(65)), "max_body_depth"),
    "10**5000 in the context": (plan_body(context=HUGE_INT), "max_number_length"),
    "10**5000 in plan args": (plan_body(args=HUGE_INT), "max_number_length"),
    "-10**5000 as a float": (plan_body(args=b"-" + HUGE_INT + b".5e3"), "max_number_length"),
    "10001 array items in the context": (plan_body(context=items(10_001)), "max_body_items"),
    "10001 array items in args": (plan_body(args=items(10_001)), "max_body_items"),
    "10001 object members": (plan_body(context=members(10_001)), "max_body_items"),
}
EXECUTOR_BOMBS: dict[str, tuple[str, bytes, str]] = {
    "start, 100000 deep": (
        "/v1/runs",
        b'{"plan_id": "%s", "version": 1, "x": %s}'
        % (str(uuid.uuid4()).encode(), nested_arrays(100_000)),
        "max_body_depth",
    ),
    "start, 10**5000 as version": (
        "/v1/runs",
        b'{"plan_id": "%s", "version": %s}' % (str(uuid.uuid4()).encode(), HUGE_INT),
        "max_number_length",
    ),
    "resolve, 10**5000 in output": (
        f"/v1/runs/{RUN_ID}/steps/a/resolve",
        b'{"action": "mark_succeeded", "output": {"n": %s}}' % HUGE_INT,
        "max_number_length",
    ),
    "resolve, 10001 items in output": (
        f"/v1/runs/{RUN_ID}/steps/a/resolve",
        b'{"action": "mark_succeeded", "output": {"n": %s}}' % items(10_001),
        "max_body_items",
    ),
    "approval, objects 50000 deep": (
        f"/v1/runs/{RUN_ID}/steps/a/approval",
        b'{"decision": "approve", "x": %s}' % nested_objects(50_000),
        "max_body_depth",
    ),
}


def assert_named_limit(response: httpx2.Response, limit: str, elapsed_s: float) -> None:
    where = response.request.url.path
    assert response.status_code == 422, (where, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert (body["type"], body["limit"]) == (LIMIT_EXCEEDED, limit), body
    assert isinstance(body["limit_value"], int)
    assert elapsed_s < 5, (where, elapsed_s)


@pytest.fixture
async def executor(db_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_app(
        ExecutorSettings(database_url=db_url, env="test", signing_key="k" * 40, _env_file=None)
    )
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://executor") as client:
            yield client


async def _plan_rows(planner: httpx2.AsyncClient) -> int:
    engine = planner.app.state.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM planner.plans"))).scalar_one())


@pytest.mark.parametrize("name", list(PLANNER_BOMBS))
async def test_planner_refuses_json_bombs_with_a_named_limit(
    planner: httpx2.AsyncClient, keys: Keys, name: str
) -> None:
    raw, limit = PLANNER_BOMBS[name]
    assert len(raw) < 1_048_576, "the bomb must fit under max_body_bytes"
    started = time.monotonic()
    response = await planner.post(
        "/v1/plans", content=raw, headers=JSON | {"X-API-Key": keys.acme_submitter}
    )
    assert_named_limit(response, limit, time.monotonic() - started)
    assert await _plan_rows(planner) == 0


@pytest.mark.parametrize("name", list(EXECUTOR_BOMBS))
async def test_executor_refuses_json_bombs_with_a_named_limit(
    executor: httpx2.AsyncClient, keys: Keys, name: str
) -> None:
    path, raw, limit = EXECUTOR_BOMBS[name]
    key = await keys.make("acme", *Role)
    started = time.monotonic()
    response = await executor.post(path, content=raw, headers=JSON | {"X-API-Key": key})
    assert_named_limit(response, limit, time.monotonic() - started)


async def test_bodies_at_the_limits_pass_the_middleware(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    h = JSON | {"X-API-Key": keys.acme_submitter}
    long_float = b"0." + b"1" * 98  # 100 characters: max_number_length
    for raw in (plan_body(context=items(10_000)), plan_body(args=long_float)):
        response = await planner.post("/v1/plans", content=raw, headers=h)
        assert response.status_code == 201, response.text[:300]
    # 64 deep passes the body check; the planner's own max_json_depth (32) then names itself.
    response = await planner.post(
        "/v1/plans", content=plan_body(context=nested_arrays(60)), headers=h
    )
    assert response.status_code == 422
    assert response.json()["limit"] == "max_json_depth"


async def test_1e400_in_plan_args_is_refused(planner: httpx2.AsyncClient, keys: Keys) -> None:
    response = await planner.post(
        "/v1/plans",
        content=plan_body(args=b"1e400"),
        headers=JSON | {"X-API-Key": keys.acme_submitter},
    )
    assert response.status_code == 422, response.text
    assert "overflows" in response.json()["detail"]
    assert await _plan_rows(planner) == 0


def _http_step(url: str, **step: Any) -> dict[str, Any]:
    return {"id": "fetch", "tool": "http.request", "args": {"url": url}, **step}


async def test_huge_tool_response_fails_the_step_with_output_too_large(db_url: str) -> None:
    server = RecordingServer()
    # The tool itself would read 4 MiB; the engine's max_output_bytes (1 MiB) is what refuses.
    tool = HttpRequestTool(loopback_policy(server.port), max_response_bytes=4 * 1_048_576)
    try:
        async with engine_env(db_url, [tool]) as env:
            started = time.monotonic()
            run_id = await env.start(
                [_http_step(server.url("/big") + "?n=2000000", retry={"max_attempts": 1})]
            )
            run = await env.wait_status(run_id, {"succeeded", "failed"}, timeout_s=20)
            assert run["status"] == "failed"
            (attempt,) = run["attempts"]
            assert attempt["error"]["code"] == "output_too_large", attempt["error"]
            assert "over 1048576" in attempt["error"]["message"]
            assert time.monotonic() - started < 15
            (step,) = run["steps"]
            assert step["output"] is None
    finally:
        await tool.aclose()
        server.stop()


async def test_tool_server_that_never_answers_times_out(db_url: str) -> None:
    canary = Canary()
    tool = HttpRequestTool(loopback_policy(canary.port))
    try:
        async with engine_env(db_url, [tool]) as env:
            started = time.monotonic()
            run_id = await env.start(
                [
                    _http_step(
                        f"http://127.0.0.1:{canary.port}/",
                        timeout_s=0.5,
                        retry={"max_attempts": 2, "initial_backoff_s": 0.0},
                    )
                ]
            )
            run = await env.wait_status(run_id, {"succeeded", "failed"}, timeout_s=15)
            assert run["status"] == "failed"
            assert [a["error"]["code"] for a in run["attempts"]] == ["timeout", "timeout"]
            assert all(a["duration_s"] < 2 for a in run["attempts"])
            assert time.monotonic() - started < 10
            assert canary.connections() >= 1  # the server was reached; it just never answered
    finally:
        await tool.aclose()
        canary.close()
