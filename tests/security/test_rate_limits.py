"""S4 (OWASP API4) per-tenant request rate limits on both services' real apps.

``tenant_rate_limit`` requests per ``tenant_rate_window_s`` per tenant, per process: past it
429 ``rate-limited`` problem+json with ``Retry-After`` (seconds) naming the limit, its value
and window; every key of the tenant shares the count, other tenants do not; the executor's
service key (``planexec:dispatch`` scope) and unauthenticated routes (health, metrics) are
never counted or throttled, so dispatch goes on; the count is per process (a second app has
its own); the window ends; and the shipped default is off.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from planexec.settings import CommonSettings
from shared_schemas import Role

from ..conftest import Keys
from .test_auth import SERVICES, assert_problem, client, make_app, operations, running

READ = {"planner": "/v1/plans", "executor": "/v1/runs"}


@pytest.mark.parametrize("service", SERVICES)
async def test_a_tenant_over_its_rate_gets_429_with_retry_after(
    db_url: str, demo_catalog_file: Path, keys: Keys, service: str
) -> None:
    app = make_app(service, db_url, demo_catalog_file, tenant_rate_limit=3, tenant_rate_window_s=2)
    path = READ[service]
    first = {"X-API-Key": keys.acme_submitter}
    second = {"X-API-Key": await keys.make("acme", *Role)}
    globex = {"X-API-Key": keys.globex_submitter}
    async with running(app), client(app) as http:
        for headers in (first, second, first):
            assert (await http.get(path, headers=headers)).status_code == 200
        for headers in (first, second):  # one tenant, one count, whichever key
            refused = await http.get(path, headers=headers)
            body = assert_problem(refused, 429, "rate-limited")
            assert (body["limit"], body["limit_value"], body["window_s"]) == (
                "tenant_rate_limit",
                3,
                2,
            )
            retry_after = int(refused.headers["Retry-After"])
            assert 1 <= retry_after <= 2 and body["retry_after_s"] == retry_after
            assert "acme" in body["detail"] and "globex" not in refused.text
        assert (await http.get(path, headers=globex)).status_code == 200
        for _ in range(10):  # health and metrics are not throttled
            assert (await http.get("/v1/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        # Per process: a second app on the same database counts on its own.
        other = make_app(service, db_url, demo_catalog_file, tenant_rate_limit=3)
        async with running(other), client(other) as elsewhere:
            assert (await elsewhere.get(path, headers=first)).status_code == 200
        # Retry-After is enough: the window has room again then.
        await asyncio.sleep(retry_after + 0.1)
        assert (await http.get(path, headers=first)).status_code == 200


async def test_the_service_key_is_not_throttled(
    db_url: str, demo_catalog_file: Path, keys: Keys
) -> None:
    app = make_app("planner", db_url, demo_catalog_file, tenant_rate_limit=2)
    service_key = {
        "X-API-Key": await keys.make("system", Role.OPERATOR, scopes=("planexec:dispatch",))
    }
    tenant_key = {"X-API-Key": await keys.make("system", Role.OPERATOR)}
    async with running(app), client(app) as http:
        for _ in range(10):
            claimed = await http.post(
                "/v1/dispatch/claim", json={"worker": "w1"}, headers=service_key
            )
            assert claimed.status_code == 200, claimed.text
        # Its tenant's ordinary keys are limited (the service key's calls were not counted).
        for _ in range(2):
            assert (await http.get("/v1/plans", headers=tenant_key)).status_code == 200
        assert_problem(await http.get("/v1/plans", headers=tenant_key), 429, "rate-limited")
        assert (await http.get("/v1/plans", headers=service_key)).status_code == 200


async def test_the_default_is_off(db_url: str, demo_catalog_file: Path, keys: Keys) -> None:
    assert CommonSettings(_env_file=None).tenant_rate_limit is None
    app = make_app("executor", db_url, demo_catalog_file)
    async with running(app), client(app) as http:
        for _ in range(100):
            response = await http.get("/v1/runs", headers={"X-API-Key": keys.acme_submitter})
            assert response.status_code == 200


@pytest.mark.parametrize("service", SERVICES)
def test_every_keyed_operation_documents_its_429(service: str, tmp_path: Path) -> None:
    """The 429 a client can get is in the OpenAPI document of every operation taking a key."""
    app = make_app(service, "postgresql+asyncpg://postgres@127.0.0.1:5432/unused", tmp_path)
    keyed = [(m, p, op) for m, p, op in operations(app) if op.get("security")]
    assert keyed, "no keyed operation found"
    for method, path, op in keyed:
        entry = op["responses"].get("429")
        assert entry is not None, f"{method.upper()} {path} does not document 429"
        assert "application/problem+json" in entry["content"], (method, path)
    for method, path, op in operations(app):
        if not op.get("security"):
            assert "429" not in op["responses"], f"{method.upper()} {path} is never limited"
