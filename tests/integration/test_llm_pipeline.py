"""The planner pipeline with the openai backend, against the scripted OpenAI-compatible server.

The real ``openai`` client talks HTTP on loopback; the server replays scripted completions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from planner_service.app import create_app
from planner_service.backends.openai_backend import draft_to_wire
from planner_service.settings import PlannerSettings
from shared_schemas import PlanDraft

from ..conftest import Keys
from ..support.scripted_llm import ScriptedError, ScriptedLLM
from .test_foundation_api import assert_problem

INTENT = "tell me the time in Paris and post it to the webhook"


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
async def planner_llm(
    db_url: str, demo_catalog_file: Path, llm: ScriptedLLM, tmp_path: Path
) -> AsyncIterator[httpx2.AsyncClient]:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "acme.cedar").write_text(
        '@id("acme.no-git-reset")\n'
        "forbid (principal, action, resource)\n"
        'when { principal.tenant == "acme" && resource.name == "git.git_reset" };\n',
        encoding="utf-8",
    )
    settings = PlannerSettings(
        database_url=db_url,
        env="test",
        signing_key="k" * 40,
        catalog_file=demo_catalog_file,
        default_backend="openai",
        llm_base_url=llm.base_url,
        llm_api_key="sk-test-secret-key-0123456789",
        llm_model="scripted-model",
        llm_seed=11,
        policy_dir=policy_dir,
        cache_ttl_s=0,
        _env_file=None,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://planner") as client:
            yield client


def wire(steps: list[dict[str, Any]]) -> str:
    return json.dumps(
        draft_to_wire(
            PlanDraft.model_validate({"steps": steps, "rationale": "r", "confidence": 0.9})
        )
    )


NOW = {"id": "now", "tool": "time.get_current_time", "args": {"timezone": "Europe/Paris"}}
POST = {
    "id": "post",
    "tool": "httpbin.post",
    "args": {"body": {"$ref": "now.output"}},
    "depends_on": ["now"],
}


async def _plan(client: httpx2.AsyncClient, key: str, **options: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/plans", json={"intent": INTENT, "options": options}, headers={"X-API-Key": key}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _attempts(
    client: httpx2.AsyncClient, key: str, plan: dict[str, Any]
) -> list[dict[str, Any]]:
    response = await client.get(plan["provenance_url"], headers={"X-API-Key": key})
    attempts: list[dict[str, Any]] = response.json()["attempts"]
    return attempts


async def test_valid_plan_first_time(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    key = await keys.make("acme", "submitter", scopes=("webhook:post",))
    llm.script([wire([NOW, POST])])
    plan = await _plan(planner_llm, key)
    assert plan["status"] == "ready"
    assert plan["plan"]["planner"] == {
        "backend": "openai",
        "model": "scripted-model",
        "prompt_version": "plan_v1",
        "template_id": None,
    }
    request = llm.requests[0]
    assert request["temperature"] == 0
    assert request["seed"] == 11
    assert request["response_format"]["json_schema"]["strict"] is True
    [attempt] = await _attempts(planner_llm, key, plan)
    assert attempt["input_tokens"] and attempt["output_tokens"]
    assert attempt["messages"][0]["role"] == "system"
    assert "sk-test-secret-key" not in json.dumps(attempt)


async def test_malformed_json_then_repaired(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    key = await keys.make("acme", "submitter", scopes=("webhook:post",))
    llm.script(['{"steps": [ {"id": "now", ', wire([NOW, POST])])
    plan = await _plan(planner_llm, key)
    assert plan["status"] == "ready"
    attempts = await _attempts(planner_llm, key, plan)
    assert len(attempts) == 2
    assert attempts[0]["issues"][0]["code"] == "schema"
    assert "malformed JSON" in attempts[0]["issues"][0]["message"]
    assert attempts[1]["issues"] == []
    # the repair round sent the broken answer back with the issue
    repair_messages = llm.requests[1]["messages"]
    assert repair_messages[-2] == {"role": "assistant", "content": '{"steps": [ {"id": "now", '}
    assert "schema" in repair_messages[-1]["content"]


async def test_cycle_then_fixed(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    key = await keys.make("acme", "submitter", scopes=("webhook:post",))
    cyclic = [{**NOW, "depends_on": ["post"]}, POST]
    llm.script([wire(cyclic), wire([NOW, POST])])
    plan = await _plan(planner_llm, key)
    assert plan["status"] == "ready"
    attempts = await _attempts(planner_llm, key, plan)
    assert [i["code"] for i in attempts[0]["issues"]] == ["cycle"]
    assert "cycle" in llm.requests[1]["messages"][-1]["content"]


async def test_unknown_tool_until_max_repairs_is_rejected_with_every_attempt(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    bad = wire([{"id": "x", "tool": "shell.exec", "args": {"cmd": "rm -rf /"}}])
    llm.script([bad, bad, bad, bad])
    plan = await _plan(planner_llm, keys.acme_submitter, max_repairs=2)
    assert plan["status"] == "rejected"
    assert "unknown_tool" in {i["code"] for i in plan["validation"]["issues"]}
    attempts = await _attempts(planner_llm, keys.acme_submitter, plan)
    assert len(attempts) == 3
    assert all("unknown_tool" in {i["code"] for i in a["issues"]} for a in attempts)
    assert len(llm.requests) == 3


async def test_destructive_step_requires_approval(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    key = await keys.make("globex", "submitter", scopes=("git:write",))
    reset = {"id": "reset", "tool": "git.git_reset", "args": {"repo_path": "/tmp/repo"}}
    llm.script([wire([reset])])
    plan = await _plan(planner_llm, key)
    assert plan["status"] == "ready"
    assert plan["policy_decisions"][0]["decision"] == "require_approval"
    assert plan["steps"][0]["requires_approval"] is True


async def test_tenant_forbidden_tool_is_denied(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    key = await keys.make("acme", "submitter", scopes=("git:write",))
    reset = {"id": "reset", "tool": "git.git_reset", "args": {"repo_path": "/tmp/repo"}}
    llm.script([wire([reset])])
    plan = await _plan(planner_llm, key, max_repairs=0)
    assert plan["status"] == "rejected"
    decision = plan["policy_decisions"][0]
    assert decision["decision"] == "deny"
    assert "acme.no-git-reset" in decision["rule_ids"]
    assert plan["validation"]["valid"] is True  # static validation passed; policy denied


async def test_model_server_down_is_a_retryable_503_and_nothing_is_stored(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    llm.script([ScriptedError(500, "overloaded")] * 6)
    response = await planner_llm.post(
        "/v1/plans", json={"intent": INTENT}, headers={"X-API-Key": keys.acme_submitter}
    )
    body = assert_problem(response, 503, "service-unavailable")
    assert body["retryable"] is True
    listing = await planner_llm.get("/v1/plans", headers={"X-API-Key": keys.acme_submitter})
    assert listing.json()["items"] == []


async def test_secrets_in_the_intent_are_redacted_from_provenance(
    planner_llm: httpx2.AsyncClient, llm: ScriptedLLM, keys: Keys
) -> None:
    key = await keys.make("acme", "submitter", scopes=("webhook:post",))
    secret = "sk-live-0123456789abcdefghijkl"
    llm.script([wire([NOW, POST])])
    response = await planner_llm.post(
        "/v1/plans",
        json={"intent": f"post the time using Authorization: Bearer {secret}"},
        headers={"X-API-Key": key},
    )
    plan = response.json()
    assert secret in json.dumps(llm.requests[0])  # the model did see the intent
    attempts = await _attempts(planner_llm, key, plan)
    assert secret not in json.dumps(attempts)
    assert "[REDACTED]" in json.dumps(attempts[0]["messages"])
