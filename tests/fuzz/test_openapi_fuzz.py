"""Schemathesis against both services' OpenAPI documents, in process, on a real database.

Every documented operation of the planner and the executor gets hypothesis-generated
requests, valid (positive) and invalid (negative) against its documented parameters and
body, sent with a valid API key that holds every role and the dispatch scope. Each
response must:

* not be a 5xx (a documented ``503`` problem, e.g. the executor's ``POST /v1/runs`` with
  no planner configured, is allowed: that is a dependency outage, not a crash);
* carry a documented status code, content type and headers (``status_code_conformance``,
  ``content_type_conformance``, ``response_headers_conformance``);
* match the documented response schema (``response_schema_conformance``);
* when it is an error (>= 400), be an RFC 9457 ``application/problem+json`` body whose
  ``status`` is the HTTP status.

The app runs with its lifespan entered on an event loop of its own (an anyio blocking
portal), so hypothesis drives the test synchronously and shrinks a failure to a minimal
request; the failing request is printed as a curl command. Examples are derandomized
(the same requests every run) and bounded by ``MAX_EXAMPLES`` per operation and mode.

Not fuzzed: ``GET /v1/runs/{run_id}/events`` (a server-sent event stream that stays open).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import httpx2
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation, BaseSchema

from executor_service.app import create_app as create_executor_app
from executor_service.settings import ExecutorSettings
from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from planexec.web import DISPATCH_SCOPE
from planner_service.app import create_app as create_planner_app
from planner_service.settings import PlannerSettings
from shared_schemas import Role

from .. import pg

SIGNING_KEY = "k" * 40
MAX_EXAMPLES = 25 * int(os.environ.get("PLANEXEC_FUZZ_SCALE", "1"))
"""Generated requests per operation and generation mode (``PLANEXEC_FUZZ_SCALE`` times 25)."""
UNUSED_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/unused"
"""Database URL of the document-only apps built at collection (never connected)."""
NOT_FUZZED = {("executor", "GET /v1/runs/{run_id}/events")}
"""Server-sent event streams: the response never ends while the run is live."""
LONG_POLL = {("planner", "POST /v1/dispatch/claim"): "wait_s"}
"""Long polls: a generated wait (up to 30 s on an empty queue) is cut to ``MAX_WAIT_S``."""
MAX_WAIT_S = 0.01
DOCUMENTED_OUTAGE = 503
"""The one 5xx a response may have: a documented ``503`` problem that says ``retryable``
(a dependency is down, e.g. ``POST /v1/runs`` of an executor with no planner configured)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _planner_app(database_url: str, catalog_file: Any = None) -> FastAPI:
    return create_planner_app(
        PlannerSettings(
            database_url=database_url,
            env="test",
            signing_key=SIGNING_KEY,
            catalog_file=catalog_file,
            _env_file=None,
        )
    )


def _executor_app(database_url: str) -> FastAPI:
    return create_executor_app(
        ExecutorSettings(
            database_url=database_url, env="test", signing_key=SIGNING_KEY, _env_file=None
        )
    )


def _labels(service: str) -> list[Any]:
    """``pytest.param`` per documented operation of ``service``, from its OpenAPI document."""
    app = _planner_app(UNUSED_DB) if service == "planner" else _executor_app(UNUSED_DB)
    params = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            label = f"{method.upper()} {path}"
            marks = (
                [pytest.mark.skip(reason="SSE stream")] if (service, label) in NOT_FUZZED else []
            )
            params.append(pytest.param(service, label, id=f"{service}:{label}", marks=marks))
    return params


@dataclass
class Service:
    """One app under test: its loaded OpenAPI schema and a way to call it in process."""

    name: str
    schema: BaseSchema
    portal: anyio.from_thread.BlockingPortal
    client: httpx2.AsyncClient

    def send(self, case: Case, api_key: str) -> httpx2.Response:
        """Send ``case`` to the app with ``api_key``; the response body is read."""
        kwargs = case.as_transport_kwargs(base_url=str(self.client.base_url).rstrip("/"))
        headers = {k: v for k, v in kwargs["headers"].items() if k.lower() != "x-api-key"}
        headers["X-API-Key"] = api_key
        body: dict[str, Any] = {}
        if "json" in kwargs:
            body["json"] = kwargs["json"]
        elif isinstance(kwargs.get("data"), bytes | str):
            body["content"] = kwargs["data"]
        elif kwargs.get("data") is not None:
            body["data"] = kwargs["data"]
        if kwargs.get("cookies"):
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())

        async def call() -> httpx2.Response:
            return await self.client.request(
                kwargs["method"], kwargs["url"], params=kwargs["params"], headers=headers, **body
            )

        return self.portal.call(call)


@pytest.fixture(scope="module")
async def fuzz_db(databases: pg.TestDatabases) -> AsyncIterator[str]:
    """One migrated database that both apps of this module share."""
    url = await databases.clone()
    try:
        yield url
    finally:
        await databases.drop(url)


@pytest.fixture(scope="module")
async def api_key(fuzz_db: str) -> str:
    """A key of tenant ``acme`` with every role and the dispatch scope: nothing is 403."""
    engine = create_engine(fuzz_db, pool_size=1, max_overflow=0)
    try:
        issued = await ApiKeyStore(engine).create(
            tenant="acme", subject="fuzzer", roles=tuple(Role), scopes=(DISPATCH_SCOPE,)
        )
        return issued.token
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def demo_catalog_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ..support.demo_catalog import demo_catalog

    path = tmp_path_factory.mktemp("fuzz-catalog") / "demo_catalog.json"
    path.write_text(demo_catalog().model_dump_json(), encoding="utf-8")
    return path


def _serve(name: str, app: FastAPI) -> Iterator[Service]:
    """Run ``app`` with its lifespan entered on a loop of its own until the generator closes."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):
        client = portal.call(_client, app, f"http://{name}")
        try:
            yield Service(
                name=name,
                schema=schemathesis.openapi.from_dict(app.openapi()),
                portal=portal,
                client=client,
            )
        finally:
            portal.call(client.aclose)


async def _client(app: FastAPI, base_url: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app, raise_app_exceptions=False), base_url=base_url
    )


@pytest.fixture(scope="module")
def services(fuzz_db: str, demo_catalog_module: Any) -> Iterator[dict[str, Service]]:
    """The planner and the executor, both running on ``fuzz_db``."""
    planner = _serve("planner", _planner_app(fuzz_db, demo_catalog_module))
    executor = _serve("executor", _executor_app(fuzz_db))
    try:
        yield {"planner": next(planner), "executor": next(executor)}
    finally:
        executor.close()
        planner.close()


def _short_wait(case: Case, field: str) -> Case:
    """``case`` with a valid wait in its body cut to ``MAX_WAIT_S`` (invalid ones stay)."""
    body = case.body
    if isinstance(body, dict):
        wait = body.get(field)
        if isinstance(wait, int | float) and not isinstance(wait, bool) and MAX_WAIT_S < wait <= 30:
            body[field] = MAX_WAIT_S
    return case


def _check(service: Service, case: Case, api_key: str) -> httpx2.Response:
    response = service.send(case, api_key)
    repro = case.as_curl_command(headers={"X-API-Key": "<key>"}, base_url=f"http://{service.name}")
    where = f"{response.status_code} for {repro}\n{response.text[:2000]}"
    checks = CHECKS
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code == DOCUMENTED_OUTAGE and str(DOCUMENTED_OUTAGE) in documented:
        assert response.json().get("retryable") is True, where
        checks = [check for check in CHECKS if check is not not_a_server_error]
    case.validate_response(response, checks=checks)
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith("application/problem+json"), where
        problem = response.json()
        assert problem.get("status") == response.status_code, where
        assert isinstance(problem.get("type"), str), where
        assert isinstance(problem.get("title"), str), where
    return response


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("service_name", "label"), _labels("planner") + _labels("executor"))
def test_operation_conforms_to_its_openapi_document(
    services: dict[str, Service], api_key: str, service_name: str, label: str
) -> None:
    service = services[service_name]
    operation: APIOperation = service.schema.find_operation_by_label(label)  # type: ignore[assignment]
    assert operation is not None, label
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    if (service_name, label) in LONG_POLL:
        strategy = strategy.map(lambda case: _short_wait(case, LONG_POLL[service_name, label]))

    @settings(
        max_examples=2 * MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the curl repro is exact
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Case) -> None:
        _check(service, case, api_key)

    fuzz()


VERSIONED = [
    ("planner", "GET /v1/plans/{plan_id}/versions/{version}"),
    ("planner", "GET /v1/plans/{plan_id}/versions/{version}/provenance"),
    ("planner", "GET /v1/dispatch/plans/{plan_id}/versions/{version}"),
    ("planner", "POST /v1/dispatch/plans/{plan_id}/revisions"),
    ("planner", "POST /v1/plans/{plan_id}/revisions"),
    ("executor", "POST /v1/runs"),
]
"""Operations that take a plan version (a Postgres ``integer``) in the path or the body."""


@pytest.mark.parametrize(
    ("service_name", "label"), VERSIONED, ids=[f"{s}:{op}" for s, op in VERSIONED]
)
@pytest.mark.parametrize("version", [2**31, 2**70])
def test_version_beyond_int32_is_a_documented_422(
    services: dict[str, Service], api_key: str, service_name: str, label: str, version: int
) -> None:
    """Regression (found by the fuzzer): such a version reached asyncpg, an OverflowError 500."""
    service = services[service_name]
    operation: APIOperation = service.schema.find_operation_by_label(label)  # type: ignore[assignment]
    path = {p.name: str(uuid.uuid4()) for p in operation.path_parameters}
    query = {"tenant": "acme"} if "dispatch/plans" in label and label.startswith("GET") else None
    if "version" in path:
        path["version"] = str(version)
        case = operation.Case(path_parameters=path, query=query)
    else:
        bodies: dict[str, dict[str, Any]] = {
            "planner:POST /v1/dispatch/plans/{plan_id}/revisions": {
                "tenant": "acme",
                "base_version": version,
                "run_id": str(uuid.uuid4()),
                "failure_context": {},
            },
            "planner:POST /v1/plans/{plan_id}/revisions": {"base_version": version},
            "executor:POST /v1/runs": {"plan_id": str(uuid.uuid4()), "version": version},
        }
        body = bodies[f"{service_name}:{label}"]
        case = operation.Case(path_parameters=path, body=body, media_type="application/json")
    response = _check(service, case, api_key)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation-error", response.text


RUN, STEP = "3ceb6ed7-5f90-399e-a331-de2dc96c4f13", "look"
UNSTORABLE = [
    # (service, method, URL, raw JSON body): U+0000 or a lone surrogate, as the fuzzer sent them
    ("planner", "POST", "/v1/dispatch/claim", rb'{"worker": "a\u0000b"}'),
    ("planner", "GET", f"/v1/dispatch/plans/{RUN}/versions/1?tenant=%00acme", None),
    (
        "planner",
        "POST",
        f"/v1/dispatch/plans/{RUN}/revisions",
        b'{"tenant": "acme", "base_version": 1, "run_id": "' + RUN.encode() + b'",'
        rb' "failure_context": {"error": "\ud800"}}',
    ),
    ("planner", "POST", f"/v1/plans/{RUN}/revisions", rb'{"failure_context": {"\udfff": 1}}'),
    ("executor", "POST", f"/v1/runs/{RUN}/steps/a%00b/approval", b'{"decision": "approve"}'),
    (
        "executor",
        "POST",
        f"/v1/runs/{RUN}/steps/{STEP}/resolve",
        rb'{"action": "mark_succeeded", "output": {"ok": ["\u0000"]}}',
    ),
]


@pytest.mark.parametrize(("service_name", "method", "url", "body"), UNSTORABLE)
def test_text_postgres_cannot_store_is_a_named_limit(
    services: dict[str, Service],
    api_key: str,
    service_name: str,
    method: str,
    url: str,
    body: bytes | None,
) -> None:
    """Regression (found by the fuzzer): such text reached asyncpg and Postgres, a 500."""
    service = services[service_name]
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    async def call() -> httpx2.Response:
        return await service.client.request(method, url, content=body, headers=headers)

    response = service.portal.call(call)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "limit-exceeded", problem
    reason = "no_nul" if b"u0000" in (body or b"") or "%00" in url else "no_lone_surrogate"
    assert problem["limit"] == reason, problem
    assert problem["errors"][0]["type"] == reason, problem
