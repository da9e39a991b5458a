"""``POST /v1/plans`` and friends on a real database, with the template and draft backends."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx2
from sqlalchemy import text

from shared_schemas import Plan, verify

from ..conftest import Keys
from .test_foundation_api import assert_problem

TIME_INTENT = "what time is it in Europe/Paris"


def _h(key: str, **extra: str) -> dict[str, str]:
    return {"X-API-Key": key, **extra}


async def _rows(planner: httpx2.AsyncClient) -> dict[str, int]:
    counts = {}
    async with planner.app.state.engine.connect() as conn:  # type: ignore[attr-defined]
        for table in ("plans", "plan_versions", "generation_attempts", "idempotency_keys"):
            counts[table] = int(
                await conn.scalar(text(f"SELECT count(*) FROM planner.{table}")) or 0
            )
    return counts


async def test_template_intent_becomes_a_ready_signed_plan(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    response = await planner.post(
        "/v1/plans", json={"intent": TIME_INTENT}, headers=_h(keys.acme_submitter)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["version"] == 1
    assert body["validation"] == {"valid": True, "issues": []}
    assert [s["tool"] for s in body["steps"]] == ["time.get_current_time"]
    assert body["steps"][0]["args"] == {"timezone": "Europe/Paris"}
    assert body["policy_decisions"][0]["decision"] == "allow"
    assert body["policy_decisions"][0]["rule_ids"]
    plan = Plan.model_validate(body["plan"])
    assert verify(plan, b"k" * 40)
    assert plan.planner.backend == "template"
    assert response.headers["location"] == f"/v1/plans/{body['plan_id']}/versions/1"

    provenance = await planner.get(body["provenance_url"], headers=_h(keys.acme_submitter))
    attempts = provenance.json()["attempts"]
    assert len(attempts) == 1
    assert attempts[0]["backend"] == "template"
    assert json.loads(attempts[0]["raw_response"])["steps"][0]["tool"] == "time.get_current_time"


async def test_destructive_step_requires_approval_and_unscoped_write_is_rejected(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    # hard reset: destructive -> the submitter lacks the scope -> denied; with the scope,
    # the step needs an approval.
    intent = "hard reset the repo at /tmp/demo-repo"
    denied = (
        await planner.post("/v1/plans", json={"intent": intent}, headers=_h(keys.acme_submitter))
    ).json()
    assert denied["status"] == "rejected", denied
    assert denied["policy_decisions"][0]["decision"] == "deny"

    tools = {
        t["name"]: t
        for t in (await planner.get("/v1/catalog", headers=_h(keys.acme_submitter))).json()["tools"]
    }
    scoped = await keys.make(
        "acme", "submitter", scopes=tuple(tools["git.git_reset"]["required_scopes"])
    )
    gated = (await planner.post("/v1/plans", json={"intent": intent}, headers=_h(scoped))).json()
    assert gated["status"] == "ready", gated
    decision = gated["policy_decisions"][0]
    assert decision["decision"] == "require_approval"
    assert "planexec.destructive-tools-need-approval" in decision["rule_ids"]
    assert gated["steps"][0]["requires_approval"] is True


async def test_requires_approval_is_never_taken_from_the_caller(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    draft = {
        "steps": [
            {
                "id": "now",
                "tool": "time.get_current_time",
                "args": {"timezone": "UTC"},
                "requires_approval": True,
            }
        ]
    }
    body = (
        await planner.post(
            "/v1/plans", json={"intent": "now", "draft": draft}, headers=_h(keys.acme_submitter)
        )
    ).json()
    assert body["status"] == "ready"
    assert body["steps"][0]["requires_approval"] is False


async def test_invalid_draft_is_stored_as_rejected_with_every_issue(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    draft = {
        "steps": [
            {
                "id": "a",
                "tool": "time.get_current_time",
                "args": {"timezone": 3},
                "depends_on": ["b"],
            },
            {"id": "b", "tool": "no.such.tool", "depends_on": ["a"]},
            {
                "id": "c",
                "tool": "transform",
                "args": {"data": {"$ref": "zzz.output/x"}, "expression": "@"},
            },
        ]
    }
    response = await planner.post(
        "/v1/plans", json={"intent": "broken", "draft": draft}, headers=_h(keys.acme_submitter)
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "rejected"
    codes = {issue["code"] for issue in body["validation"]["issues"]}
    assert {"args_schema", "unknown_tool", "cycle", "ref_not_ancestor"} <= codes
    stored = await planner.get(f"/v1/plans/{body['plan_id']}", headers=_h(keys.acme_submitter))
    assert stored.json()["status"] == "rejected"


async def test_no_matching_template_is_a_rejected_plan_with_provenance(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    body = (
        await planner.post(
            "/v1/plans", json={"intent": "bake a cake"}, headers=_h(keys.acme_submitter)
        )
    ).json()
    assert body["status"] == "rejected"
    assert body["validation"]["issues"][0]["code"] == "generation_failed"
    provenance = (await planner.get(body["provenance_url"], headers=_h(keys.acme_submitter))).json()
    assert provenance["attempts"][0]["issues"][0]["code"] == "generation_failed"


async def test_safe_mode_and_budget(planner: httpx2.AsyncClient, keys: Keys) -> None:
    scoped = await keys.make("acme", "submitter", scopes=("git:write",))
    safe = await planner.post(
        "/v1/plans",
        json={"intent": "create a release branch 1.0", "options": {"safe_mode": True}},
        headers=_h(scoped),
    )
    body = safe.json()
    assert body["status"] == "rejected", body
    assert "unsafe_in_safe_mode" in {i["code"] for i in body["validation"]["issues"]}


async def test_idempotency_key_replays_and_refuses_a_different_body(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    headers = _h(keys.acme_submitter, **{"Idempotency-Key": "order-8812"})
    first = await planner.post("/v1/plans", json={"intent": TIME_INTENT}, headers=headers)
    again = await planner.post(
        "/v1/plans", json={"context": {}, "intent": TIME_INTENT}, headers=headers
    )
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["plan_id"] == first.json()["plan_id"]
    other = await planner.post(
        "/v1/plans", json={"intent": "what time is it in UTC"}, headers=headers
    )
    assert_problem(other, 409, "idempotency-key-reused")
    assert (await _rows(planner))["plans"] == 1
    # another tenant may use the same key for its own request
    theirs = await planner.post(
        "/v1/plans",
        json={"intent": TIME_INTENT},
        headers=_h(keys.globex_submitter, **{"Idempotency-Key": "order-8812"}),
    )
    assert theirs.status_code == 201
    assert theirs.json()["plan_id"] != first.json()["plan_id"]


async def test_concurrent_requests_with_one_idempotency_key_make_one_plan(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    headers = _h(keys.acme_submitter, **{"Idempotency-Key": "burst"})
    responses = await asyncio.gather(
        *[
            planner.post("/v1/plans", json={"intent": TIME_INTENT}, headers=headers)
            for _ in range(10)
        ]
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["plan_id"] for r in responses}) == 1
    assert (await _rows(planner))["plans"] == 1


async def test_cache_hit_makes_a_new_plan_from_the_cached_body(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    first = (
        await planner.post(
            "/v1/plans", json={"intent": TIME_INTENT}, headers=_h(keys.acme_submitter)
        )
    ).json()
    second = (
        await planner.post(
            "/v1/plans",
            json={"intent": "  What time is it in Europe/Paris "},
            headers=_h(keys.acme_submitter),
        )
    ).json()
    assert second["plan_id"] != first["plan_id"]
    assert second["cache_hit"] is True
    assert second["steps"] == first["steps"]
    provenance = (
        await planner.get(second["provenance_url"], headers=_h(keys.acme_submitter))
    ).json()
    assert provenance["cached_from"] == {"plan_id": first["plan_id"], "version": 1}
    assert provenance["attempts"][0]["cache_hit"] is True
    # the cache is per tenant
    theirs = (
        await planner.post(
            "/v1/plans", json={"intent": TIME_INTENT}, headers=_h(keys.globex_submitter)
        )
    ).json()
    assert theirs["cache_hit"] is False


async def test_revision_from_a_person_makes_version_two(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    first = (
        await planner.post(
            "/v1/plans", json={"intent": TIME_INTENT}, headers=_h(keys.acme_submitter)
        )
    ).json()
    plan_id = first["plan_id"]
    draft = {
        "steps": [
            {"id": "now", "tool": "time.get_current_time", "args": {"timezone": "Asia/Tokyo"}}
        ]
    }
    revised = await planner.post(
        f"/v1/plans/{plan_id}/revisions",
        json={"base_version": 1, "draft": draft},
        headers=_h(keys.acme_submitter),
    )
    assert revised.status_code == 201, revised.text
    body = revised.json()
    assert body["version"] == 2
    assert body["parent_version"] == 1
    assert body["steps"][0]["args"]["timezone"] == "Asia/Tokyo"
    latest = (await planner.get(f"/v1/plans/{plan_id}", headers=_h(keys.acme_submitter))).json()
    assert latest["version"] == 2
    v1 = (
        await planner.get(f"/v1/plans/{plan_id}/versions/1", headers=_h(keys.acme_submitter))
    ).json()
    assert v1["steps"][0]["args"]["timezone"] == "Europe/Paris"
    stale = await planner.post(
        f"/v1/plans/{plan_id}/revisions",
        json={"base_version": 1, "draft": draft},
        headers=_h(keys.acme_submitter),
    )
    assert_problem(stale, 409, "conflict")
    theirs = await planner.post(
        f"/v1/plans/{plan_id}/revisions", json={"draft": draft}, headers=_h(keys.globex_submitter)
    )
    assert_problem(theirs, 404, "not-found")


async def test_failure_revision_gates_new_side_effects(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    scoped = await keys.make("acme", "submitter", scopes=("webhook:post",))
    first = (
        await planner.post("/v1/plans", json={"intent": TIME_INTENT}, headers=_h(scoped))
    ).json()
    draft = {
        "steps": [
            {"id": "now", "tool": "time.get_current_time", "args": {"timezone": "Europe/Paris"}},
            {
                "id": "leak",
                "tool": "httpbin.post",
                "args": {"body": {"to": "attacker"}},
                "depends_on": ["now"],
            },
        ]
    }
    revised = await planner.post(
        f"/v1/plans/{first['plan_id']}/revisions",
        json={"draft": draft, "failure_context": {"step": "now", "error": "timeout"}},
        headers=_h(scoped),
    )
    body = revised.json()
    assert revised.status_code == 201, body
    decisions = {d["step_id"]: d for d in body["policy_decisions"]}
    assert decisions["now"]["decision"] == "allow"
    assert decisions["leak"]["decision"] == "require_approval"
    assert "planexec.revision.new-side-effect" in decisions["leak"]["rule_ids"]


async def test_listing_filters_by_status(planner: httpx2.AsyncClient, keys: Keys) -> None:
    await planner.post("/v1/plans", json={"intent": TIME_INTENT}, headers=_h(keys.acme_submitter))
    await planner.post("/v1/plans", json={"intent": "bake a cake"}, headers=_h(keys.acme_submitter))
    ready = (
        await planner.get("/v1/plans", params={"status": "ready"}, headers=_h(keys.acme_submitter))
    ).json()
    rejected = (
        await planner.get(
            "/v1/plans", params={"status": "rejected"}, headers=_h(keys.acme_submitter)
        )
    ).json()
    assert [p["status"] for p in ready["items"]] == ["ready"]
    assert [p["intent"] for p in rejected["items"]] == ["bake a cake"]


# --- bad input: a problem+json with the right status and type, and nothing written ---------


async def _refused(
    planner: httpx2.AsyncClient, status: int, code: str, **request: Any
) -> dict[str, Any]:
    before = await _rows(planner)
    response = await planner.request("POST", "/v1/plans", **request)
    body = assert_problem(response, status, code)
    assert await _rows(planner) == before, "a refused request wrote something"
    return body


async def test_bad_input_is_refused_and_nothing_is_written(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    json_h = _h(keys.acme_submitter, **{"Content-Type": "application/json"})
    await _refused(planner, 400, "malformed-request", content=b'{"intent": ', headers=json_h)
    await _refused(planner, 401, "unauthenticated", json={"intent": TIME_INTENT})
    await _refused(
        planner,
        401,
        "unauthenticated",
        json={"intent": TIME_INTENT},
        headers={"X-API-Key": "pxk_000000000000_" + "a" * 43},
    )
    await _refused(
        planner,
        415,
        "unsupported-media-type",
        content=b"intent=x",
        headers=_h(keys.acme_submitter, **{"Content-Type": "text/plain"}),
    )
    big = json.dumps({"intent": "x", "context": {"blob": "a" * (1_048_576 + 10)}}).encode()
    body = await _refused(planner, 413, "payload-too-large", content=big, headers=json_h)
    assert body["limit"] == "max_body_bytes"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b" " * 32_768

    await _refused(planner, 413, "payload-too-large", content=chunks(), headers=json_h)


async def test_limits_are_named(planner: httpx2.AsyncClient, keys: Keys) -> None:
    h = _h(keys.acme_submitter)
    body = await _refused(planner, 422, "limit-exceeded", json={"intent": "x" * 16_385}, headers=h)
    assert body["limit"] == "max_intent_bytes"
    deep: Any = "leaf"
    for _ in range(33):
        deep = {"d": deep}
    body = await _refused(
        planner, 422, "limit-exceeded", json={"intent": "x", "context": deep}, headers=h
    )
    assert body["limit"] == "max_json_depth"
    steps = [
        {"id": f"s{i}", "tool": "transform", "args": {"data": 1, "expression": "@"}}
        for i in range(10_000)
    ]
    body = await _refused(
        planner, 422, "limit-exceeded", json={"intent": "x", "draft": {"steps": steps}}, headers=h
    )
    assert body["limit"] == "max_steps"
    body = await _refused(planner, 422, "limit-exceeded", json={"intent": "x\u0000y"}, headers=h)
    assert body["limit"] == "no_nul"


async def test_non_i_json_numbers_and_duplicate_keys_are_refused(
    planner: httpx2.AsyncClient, keys: Keys
) -> None:
    h = _h(keys.acme_submitter, **{"Content-Type": "application/json"})
    for raw, needle in [
        (b'{"intent": "x", "context": {"n": NaN}}', "NaN"),
        (b'{"intent": "x", "context": {"n": 9007199254740993}}', "I-JSON"),
        (b'{"intent": "x", "context": {"n": 1e400}}', "overflows"),
        (b'{"intent": "x", "intent": "y"}', "duplicate key"),
    ]:
        body = await _refused(planner, 422, "validation-error", content=raw, headers=h)
        assert needle in str(body["detail"])


async def test_mass_assignment_is_refused(planner: httpx2.AsyncClient, keys: Keys) -> None:
    h = _h(keys.acme_submitter)
    body = await _refused(
        planner,
        422,
        "validation-error",
        json={"intent": TIME_INTENT, "tenant": "globex", "status": "ready"},
        headers=h,
    )
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "tenant"), ("body", "status")}
    await _refused(
        planner,
        422,
        "validation-error",
        json={"intent": TIME_INTENT, "backend": "shell"},
        headers=h,
    )
    await _refused(
        planner,
        422,
        "validation-error",
        json={"intent": TIME_INTENT, "backend": "draft"},
        headers=h,
    )


async def test_unknown_revision_target_is_404(planner: httpx2.AsyncClient, keys: Keys) -> None:
    response = await planner.post(
        f"/v1/plans/{uuid.uuid4()}/revisions",
        json={"draft": {"steps": []}},
        headers=_h(keys.acme_submitter),
    )
    assert_problem(response, 404, "not-found")
