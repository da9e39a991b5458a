"""The planner's dispatch queue: execute -> queued -> claimed (SKIP LOCKED, lease) -> acked."""

from __future__ import annotations

import asyncio
import uuid

import httpx2

from shared_schemas import Plan, verify

from ..conftest import Keys
from .test_foundation_api import assert_problem

TIME = "what time is it in Europe/Paris"


async def _service_key(keys: Keys) -> str:
    return await keys.make("system", "operator", scopes=("planexec:dispatch",))


async def _claim(planner: httpx2.AsyncClient, key: str, worker: str, **extra: object) -> list[dict]:  # type: ignore[type-arg]
    body = {"worker": worker, "max_items": 10, "lease_s": 1, **extra}
    response = await planner.post("/v1/dispatch/claim", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    items: list[dict] = response.json()["items"]  # type: ignore[type-arg]
    return items


async def test_ready_plan_asked_to_execute_is_claimed_once_and_acked(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    service = await _service_key(keys)
    submitter = {"X-API-Key": keys.acme_submitter}
    ready = (
        await planner.post(
            "/v1/plans", json={"intent": TIME, "options": {"execute": True}}, headers=submitter
        )
    ).json()
    await planner.post(
        "/v1/plans", json={"intent": "what time is it in UTC"}, headers=submitter
    )  # not executed
    await planner.post(
        "/v1/plans", json={"intent": "bake a cake", "options": {"execute": True}}, headers=submitter
    )  # rejected
    first, second = await asyncio.gather(
        _claim(planner, service, "w1"), _claim(planner, service, "w2")
    )
    claimed = first + second
    assert [c["plan"]["plan_id"] for c in claimed] == [ready["plan_id"]]  # exactly once
    item = claimed[0]
    assert verify(Plan.model_validate(item["plan"]), b"k" * 40)
    assert item["claims"] == 1
    worker = "w1" if first else "w2"
    other = "w2" if first else "w1"
    run_id = str(uuid.uuid4())
    lost = await planner.post(
        f"/v1/dispatch/{item['dispatch_id']}/ack",
        json={"worker": other, "run_id": run_id},
        headers={"X-API-Key": service},
    )
    assert_problem(lost, 409, "conflict")
    acked = await planner.post(
        f"/v1/dispatch/{item['dispatch_id']}/ack",
        json={"worker": worker, "run_id": run_id},
        headers={"X-API-Key": service},
    )
    assert acked.status_code == 204
    assert await _claim(planner, service, "w3") == []


async def test_an_expired_claim_is_handed_out_again(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    service = await _service_key(keys)
    await planner.post(
        "/v1/plans",
        json={"intent": TIME, "options": {"execute": True}},
        headers={"X-API-Key": keys.acme_submitter},
    )
    [first] = await _claim(planner, service, "crashed-worker")
    assert await _claim(planner, service, "w2") == []  # still leased
    await asyncio.sleep(1.2)
    [again] = await _claim(planner, service, "w2")
    assert again["dispatch_id"] == first["dispatch_id"]
    assert again["claims"] == 2


async def test_long_poll_wakes_up_on_a_new_plan(planner: httpx2.AsyncClient, keys: Keys) -> None:
    service = await _service_key(keys)
    waiter = asyncio.create_task(_claim(planner, service, "w1", wait_s=10))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await planner.post(
        "/v1/plans",
        json={"intent": TIME, "options": {"execute": True}},
        headers={"X-API-Key": keys.acme_submitter},
    )
    items = await asyncio.wait_for(waiter, 5)
    assert len(items) == 1


async def test_dispatch_needs_the_service_scope(planner: httpx2.AsyncClient, keys: Keys) -> None:
    response = await planner.post(
        "/v1/dispatch/claim", json={"worker": "x"}, headers={"X-API-Key": keys.acme_submitter}
    )
    assert_problem(response, 403, "forbidden")
    fetch = await planner.get(
        f"/v1/dispatch/plans/{uuid.uuid4()}/versions/1",
        params={"tenant": "acme"},
        headers={"X-API-Key": keys.acme_submitter},
    )
    assert_problem(fetch, 403, "forbidden")


async def test_service_fetches_a_tenants_plan(planner: httpx2.AsyncClient, keys: Keys) -> None:
    service = await _service_key(keys)
    plan = (
        await planner.post(
            "/v1/plans", json={"intent": TIME}, headers={"X-API-Key": keys.acme_submitter}
        )
    ).json()
    url = f"/v1/dispatch/plans/{plan['plan_id']}/versions/1"
    found = await planner.get(url, params={"tenant": "acme"}, headers={"X-API-Key": service})
    assert found.status_code == 200
    assert found.json()["status"] == "ready"
    wrong_tenant = await planner.get(
        url, params={"tenant": "globex"}, headers={"X-API-Key": service}
    )
    assert_problem(wrong_tenant, 404, "not-found")
