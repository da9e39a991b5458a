"""S2 (OWASP API2 broken authentication) on both services' real apps and a real database.

- Every operation the OpenAPI documents mark as needing ``X-API-Key`` (all but health) answers
  a missing, empty, malformed, unknown-id, wrong-secret or revoked key with 401
  ``unauthenticated`` problem+json: the same stable type and, for every presented key, the same
  detail (no oracle telling an unknown id from a wrong secret or a revoked key), and no data.
  Keys do not expire (``planner.api_keys`` has no expiry; revocation ends a key), so there is
  no expired-key case.
- Key verification compares SHA-256 digests with ``hmac.compare_digest`` exactly once for an
  unknown id, a revoked key and a wrong secret alike (no early exit), and the verified-key
  cache only answers for a secret it verified.
- Failed authentications are rate-limited per client address (``auth_failure_limit`` per
  ``auth_failure_window_s``, moving window, per process): past the limit every request from
  that address that presents a key, valid or not, gets 429 ``rate-limited`` with
  ``Retry-After`` (seconds) and the limit named; health stays open, other addresses are
  unaffected, missing keys are not counted, the lockout ends with the window, and console
  logins count and are locked out the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI

from executor_service.app import create_app as create_executor
from executor_service.settings import ExecutorSettings
from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from planner_service.app import create_app as create_planner
from planner_service.settings import PlannerSettings
from shared_schemas import Role

from ..conftest import Keys

PROBLEM = "application/problem+json"
TYPES = "https://planexec.dev/problems/"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "retryable"}
SERVICES = ("planner", "executor")
# Operations that take no key: the only ones without ``security`` in the OpenAPI documents.
OPEN_OPERATIONS = {("planner", "get", "/v1/healthz"), ("executor", "get", "/v1/healthz")}


def make_app(service: str, db_url: str, catalog_file: Path, **settings: Any) -> FastAPI:
    """A service's real app on ``db_url`` with ``settings`` overriding the test defaults."""
    common: dict[str, Any] = {
        "database_url": db_url,
        "env": "test",
        "signing_key": "k" * 40,
        "_env_file": None,
    }
    if service == "planner":
        return create_planner(PlannerSettings(catalog_file=catalog_file, **common, **settings))
    return create_executor(ExecutorSettings(**common, **settings))


def client(app: FastAPI, host: str = "127.0.0.1") -> httpx2.AsyncClient:
    """An in-process HTTP client of ``app`` whose requests come from address ``host``."""
    transport = httpx2.ASGITransport(app=app, client=(host, 40_000))
    return httpx2.AsyncClient(transport=transport, base_url="http://service")


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """``app`` with its lifespan entered."""
    async with app.router.lifespan_context(app):
        yield app


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation in ``app``'s OpenAPI document."""
    return [
        (method, path, op)
        for path, ops in app.openapi()["paths"].items()
        for method, op in ops.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def concrete(path: str) -> str:
    """``path`` with its parameters filled with well-formed values that name nothing."""
    values = {"version": "1", "step_id": "a"}
    return re.sub(r"\{([a-z_]+)\}", lambda m: values.get(m.group(1), str(uuid.uuid4())), path)


def request_kwargs(path: str, op: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid-enough request for ``op``: required query parameters and a JSON body."""
    params = {
        p["name"]: "acme" for p in op.get("parameters", []) if p["in"] == "query" and p["required"]
    }
    if path.endswith("/events"):
        params["follow"] = "false"
    kwargs: dict[str, Any] = {"params": params}
    if "requestBody" in op:
        kwargs["json"] = {}
    return kwargs


def assert_problem(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, (where, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM), where
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"], body["code"]) == (TYPES + code, status, code), where
    return body


def unknown_key() -> str:
    return f"pxk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def wrong_secret(key: str) -> str:
    return key[: len("pxk_") + 12 + 1] + secrets.token_urlsafe(32)


async def test_every_keyed_operation_refuses_bad_keys_alike(
    db_url: str, demo_catalog_file: Path, keys: Keys
) -> None:
    owner_key = await keys.make("acme", *Role, scopes=("planexec:dispatch",))
    revoked_key = await keys.make("acme", *Role, scopes=("planexec:dispatch",))
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    try:
        assert await ApiKeyStore(engine).revoke(revoked_key.split("_")[1])
    finally:
        await engine.dispose()
    bad: dict[str, str | None] = {
        "missing": None,
        "empty": "",
        "not a planexec key": "not-a-key",
        "bearer token": "Bearer eyJhbGciOiJub25lIn0.e30.",  # alg:none JWT: not a key here
        "bad id characters": "pxk_zzzzzzzzzzzz_" + "a" * 43,
        "short secret": owner_key[:-1],
        "oversized": "pxk_" + "a" * 8000,
        "unknown id": unknown_key(),
        "wrong secret": wrong_secret(owner_key),
        "revoked": revoked_key,
    }
    documented: set[tuple[str, str, str]] = set()
    checked = 0
    for service in SERVICES:
        app = make_app(service, db_url, demo_catalog_file, auth_failure_limit=None)
        async with running(app), client(app) as http:
            for method, path, op in operations(app):
                documented.add((service, method, path))
                if not op.get("security"):
                    continue
                url, kwargs = concrete(path), request_kwargs(path, op)
                details = set()
                for kind, key in bad.items():
                    headers = {} if key is None else {"X-API-Key": key}
                    response = await http.request(method.upper(), url, headers=headers, **kwargs)
                    body = assert_problem(response, 401, "unauthenticated")
                    assert set(body) <= PROBLEM_FIELDS, (kind, body)
                    assert "acme" not in response.text and "Retry-After" not in response.headers
                    if key:
                        details.add(body["detail"])
                    checked += 1
                assert details == {"the API key is not valid"}, (service, path, details)
                # Control: the owner's key gets past authentication on the same request.
                ok = await http.request(
                    method.upper(), url, headers={"X-API-Key": owner_key}, **kwargs
                )
                assert ok.status_code not in (401, 403, 500), (service, path, ok.text[:300])
    open_ops = {op for op in documented if op in OPEN_OPERATIONS}
    assert open_ops == OPEN_OPERATIONS
    assert checked == len(bad) * (len(documented) - len(OPEN_OPERATIONS))
    assert checked >= len(bad) * 20  # both documents were walked


async def test_key_verification_is_constant_time(
    db_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await keys.make("acme", Role.SUBMITTER)
    revoked = await keys.make("acme", Role.SUBMITTER)
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    compared: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr("planexec.auth.store.hmac", SimpleNamespace(compare_digest=spy))
    try:
        store = ApiKeyStore(engine, cache_ttl_s=0)
        assert await store.revoke(revoked.split("_")[1])
        for refused in (unknown_key(), wrong_secret(key), revoked):
            compared.clear()
            assert await store.authenticate(refused) is None
            (pair,) = compared  # exactly one digest comparison, whatever the reason
            assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in pair)
        compared.clear()
        assert await store.authenticate(key) is not None
        assert len(compared) == 1

        # The cache answers only for the secret it verified: a wrong secret of a cached id
        # still goes to the database and fails.
        cached = ApiKeyStore(engine, cache_ttl_s=60)
        assert await cached.authenticate(key) is not None
        assert await cached.authenticate(wrong_secret(key)) is None
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
async def test_failed_authentications_lock_the_client_out(
    db_url: str, demo_catalog_file: Path, keys: Keys, service: str
) -> None:
    app = make_app(
        service, db_url, demo_catalog_file, auth_failure_limit=3, auth_failure_window_s=2
    )
    path = "/v1/plans" if service == "planner" else "/v1/runs"
    good = {"X-API-Key": keys.acme_submitter}
    async with running(app), client(app, "10.0.0.1") as attacker, client(app, "10.0.0.2") as other:
        for _ in range(3):
            assert_problem(
                await attacker.get(path, headers={"X-API-Key": unknown_key()}),
                401,
                "unauthenticated",
            )
        for headers in ({"X-API-Key": unknown_key()}, good):  # a right key is not even checked
            locked = await attacker.get(path, headers=headers)
            body = assert_problem(locked, 429, "rate-limited")
            assert (body["limit"], body["limit_value"], body["window_s"]) == (
                "auth_failure_limit",
                3,
                2,
            )
            retry_after = int(locked.headers["Retry-After"])
            assert 1 <= retry_after <= 2 and body["retry_after_s"] == retry_after
            assert body["retryable"] is True
        assert (await attacker.get("/v1/healthz")).status_code == 200
        # Another address is not locked out, and its failures count on their own.
        assert (await other.get(path, headers=good)).status_code == 200
        assert_problem(
            await other.get(path, headers={"X-API-Key": unknown_key()}), 401, "unauthenticated"
        )
        await asyncio.sleep(retry_after + 0.1)
        assert (await attacker.get(path, headers=good)).status_code == 200


async def test_missing_keys_do_not_count_and_the_limit_can_be_off(
    db_url: str, demo_catalog_file: Path, keys: Keys
) -> None:
    good = {"X-API-Key": keys.acme_submitter}
    limited = make_app("planner", db_url, demo_catalog_file, auth_failure_limit=3)
    async with running(limited), client(limited) as http:
        for _ in range(10):
            assert_problem(await http.get("/v1/plans"), 401, "unauthenticated")
        assert (await http.get("/v1/plans", headers=good)).status_code == 200
    unlimited = make_app("planner", db_url, demo_catalog_file, auth_failure_limit=None)
    async with running(unlimited), client(unlimited) as http:
        for _ in range(30):
            bad = {"X-API-Key": unknown_key()}
            assert_problem(await http.get("/v1/plans", headers=bad), 401, "unauthenticated")
        assert (await http.get("/v1/plans", headers=good)).status_code == 200


def test_the_default_limits_failures() -> None:
    settings = PlannerSettings(_env_file=None)
    assert (settings.auth_failure_limit, settings.auth_failure_window_s) == (20, 60)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


async def test_console_logins_count_and_are_locked_out(
    db_url: str, demo_catalog_file: Path, keys: Keys
) -> None:
    app = make_app(
        "executor", db_url, demo_catalog_file, auth_failure_limit=2, auth_failure_window_s=30
    )
    async with running(app), client(app, "10.0.0.3") as browser:
        token = _csrf((await browser.get("/ui/login")).text)

        async def login(api_key: str) -> httpx2.Response:
            return await browser.post("/ui/login", json={"api_key": api_key, "csrf_token": token})

        for _ in range(2):
            wrong = await login(unknown_key())
            assert wrong.status_code == 401 and "That API key is not valid." in wrong.text
        for api_key in (unknown_key(), keys.acme_submitter):
            body = assert_problem(await login(api_key), 429, "rate-limited")
            assert body["limit"] == "auth_failure_limit"
        assert "planexec_ui=" not in str(browser.cookies)
        # The API shares the count: the same address is locked out there too.
        api = await browser.get("/v1/runs", headers={"X-API-Key": keys.acme_submitter})
        assert_problem(api, 429, "rate-limited")
    # Control: on a fresh app the same key logs in.
    fresh = make_app("executor", db_url, demo_catalog_file)
    async with running(fresh), client(fresh, "10.0.0.3") as browser:
        token = _csrf((await browser.get("/ui/login")).text)
        ok = await browser.post(
            "/ui/login", json={"api_key": keys.acme_submitter, "csrf_token": token}
        )
        assert ok.status_code == 303, ok.text[:300]
