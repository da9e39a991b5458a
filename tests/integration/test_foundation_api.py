"""Planner API basics on a real database: health, auth, tenancy, problem+json."""

from __future__ import annotations

import uuid

import httpx2
from sqlalchemy import text

from planner_service.store import NewVersion
from shared_schemas import Plan, PlannerInfo, Step, ValidationReport, seal

from ..conftest import Keys

PROBLEM = "application/problem+json"
TYPE = "https://planexec.dev/problems/"


def assert_problem(response: httpx2.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["type"] == TYPE + code
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    return body


async def _store_plan(planner: httpx2.AsyncClient, tenant: str) -> uuid.UUID:
    plan = Plan(
        plan_id=uuid.uuid4(),
        version=1,
        intent="what time is it in Paris",
        tenant=tenant,
        created_by=f"{tenant}-user",
        steps=[Step(id="now", tool="time.get_current_time", args={"timezone": "Europe/Paris"})],
        catalog_version="sha256:" + "a" * 64,
        policy_version="sha256:" + "b" * 64,
        planner=PlannerInfo(backend="draft"),
    )
    sealed = seal(plan, b"k" * 40)
    store = planner.app.state.plan_store  # type: ignore[attr-defined]
    assert await store.create_version(
        NewVersion(
            plan=sealed,
            status="ready",
            validation=ValidationReport(valid=True),
            policy_decisions=[],
            attempts=[],
        )
    )
    return plan.plan_id


async def test_healthz_answers_without_a_key(planner: httpx2.AsyncClient) -> None:
    response = await planner.get("/v1/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "planexec-planner", "database": "ok"}


async def test_missing_and_wrong_keys_are_401(planner: httpx2.AsyncClient, keys: Keys) -> None:
    assert_problem(await planner.get("/v1/plans"), 401, "unauthenticated")
    wrong = keys.acme_submitter[:-4] + "AAAA"
    assert_problem(
        await planner.get("/v1/plans", headers={"X-API-Key": wrong}), 401, "unauthenticated"
    )
    assert_problem(
        await planner.get("/v1/plans", headers={"X-API-Key": "not-a-key"}), 401, "unauthenticated"
    )
    ok = await planner.get("/v1/plans", headers={"X-API-Key": keys.acme_submitter})
    assert ok.status_code == 200


async def test_revoked_key_is_401(planner: httpx2.AsyncClient, keys: Keys) -> None:
    key_id = keys.acme_submitter.split("_")[1]
    assert (
        await planner.get("/v1/plans", headers={"X-API-Key": keys.acme_submitter})
    ).status_code == 200
    assert await planner.app.state.key_store.revoke(key_id)  # type: ignore[attr-defined]
    assert_problem(
        await planner.get("/v1/plans", headers={"X-API-Key": keys.acme_submitter}),
        401,
        "unauthenticated",
    )


async def test_own_plan_is_visible_another_tenants_is_404(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    plan_id = await _store_plan(planner, "acme")
    own = await planner.get(f"/v1/plans/{plan_id}", headers={"X-API-Key": keys.acme_submitter})
    assert own.status_code == 200
    body = own.json()
    assert body["plan_id"] == str(plan_id)
    assert body["content_hash"].startswith("sha256:")
    assert body["plan"]["tenant"] == "acme"
    assert body["provenance_url"] == f"/v1/plans/{plan_id}/versions/1/provenance"

    other = {"X-API-Key": keys.globex_submitter}
    assert_problem(await planner.get(f"/v1/plans/{plan_id}", headers=other), 404, "not-found")
    assert_problem(
        await planner.get(f"/v1/plans/{plan_id}/versions/1", headers=other), 404, "not-found"
    )
    listing = await planner.get("/v1/plans", headers=other)
    assert listing.json()["items"] == []
    own_listing = await planner.get("/v1/plans", headers={"X-API-Key": keys.acme_submitter})
    assert [item["plan_id"] for item in own_listing.json()["items"]] == [str(plan_id)]


async def test_unknown_plan_route_and_method(planner: httpx2.AsyncClient, keys: Keys) -> None:
    headers = {"X-API-Key": keys.acme_submitter}
    assert_problem(
        await planner.get(f"/v1/plans/{uuid.uuid4()}", headers=headers), 404, "not-found"
    )
    assert_problem(await planner.get("/v1/nothing-here", headers=headers), 404, "not-found")
    assert_problem(await planner.delete("/v1/healthz", headers=headers), 405, "method-not-allowed")
    body = assert_problem(
        await planner.get("/v1/plans/not-a-uuid", headers=headers), 422, "validation-error"
    )
    assert body["errors"]


async def test_listing_pages_with_a_cursor(planner: httpx2.AsyncClient, keys: Keys) -> None:
    ids = {await _store_plan(planner, "acme") for _ in range(5)}
    headers = {"X-API-Key": keys.acme_submitter}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await planner.get("/v1/plans", headers=headers, params=params)).json()
        seen += [item["plan_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(i) for i in ids)
    assert len(seen) == len(set(seen))
    bad = await planner.get("/v1/plans", headers=headers, params={"cursor": "garbage"})
    assert_problem(bad, 422, "validation-error")


async def test_unexpected_exception_is_a_500_problem_without_internals(
    planner: httpx2.AsyncClient,
) -> None:
    app = planner.app  # type: ignore[attr-defined]

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://planner") as client:
        response = await client.get("/v1/boom")
    body = assert_problem(response, 500, "internal")
    assert "secret" not in response.text
    assert body["retryable"] is False


async def _count_rows(planner: httpx2.AsyncClient) -> int:
    async with planner.app.state.engine.connect() as conn:  # type: ignore[attr-defined]
        total = 0
        for table in ("plans", "plan_versions", "generation_attempts", "idempotency_keys"):
            total += int(await conn.scalar(text(f"SELECT count(*) FROM planner.{table}")) or 0)
        return total


async def test_openapi_documents_problem_details_and_api_key(planner: httpx2.AsyncClient) -> None:
    spec = (await planner.get("/openapi.json")).json()
    assert "ProblemDetails" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    get_plan = spec["paths"]["/v1/plans/{plan_id}"]["get"]
    assert "application/problem+json" in get_plan["responses"]["404"]["content"]
