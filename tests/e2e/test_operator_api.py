"""Operator actions, duplicate submissions, dry runs and replans over the real HTTP APIs.

The planner, the executor API and a worker run as processes; effects are counted at the
recording server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from planner_service.backends.openai_backend import draft_to_wire
from shared_schemas import PlanDraft

from ..support.recording_server import RecordingServer
from ..support.scripted_llm import ScriptedLLM
from .conftest import Pair, start_pair
from .processes import eventually

PROBLEM = "https://planexec.dev/problems/"


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def _sink_env(sink: RecordingServer) -> dict[str, str]:
    port = sink.base_url.rsplit(":", 1)[1]
    return {
        "PLANEXEC_HTTP_ALLOW_NETWORKS": '["127.0.0.1/32"]',
        "PLANEXEC_HTTP_ALLOW_PORTS": f"[{port}]",
    }


GATE_PAYMENTS = """
@id("test.payments-need-approval")
forbid (principal, action == Planexec::Action::"invoke_unattended", resource)
when { resource.name == "http.request" && context.step_id == "pay" };
"""


@pytest.fixture
def ops(
    db_url: str, keys_for: dict[str, str], tmp_path: Path, sink: RecordingServer
) -> Iterator[Pair]:
    sink.reset()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "payments.cedar").write_text(GATE_PAYMENTS, encoding="utf-8")
    env = {**_sink_env(sink), "PLANEXEC_POLICY_DIR": str(policies)}
    with start_pair(db_url, keys_for, tmp_path, env) as running:
        yield running


def post(sink: RecordingServer, name: str, step_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "tool": "http.request",
        "args": {"method": "POST", "url": f"{sink.base_url}/effects/{name}", "json": {}},
        "retry": {"max_attempts": 1},
        **extra,
    }


def _plan(pair: Pair, steps: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
    response = httpx2.post(
        f"{pair.planner}/v1/plans",
        json={"intent": "operator test", "draft": {"steps": steps}, **body},
        headers=pair.h(pair.submitter),
    )
    assert response.status_code == 201, response.text
    plan: dict[str, Any] = response.json()
    assert plan["status"] == "ready", plan
    return plan


def _start(pair: Pair, plan: dict[str, Any], **body: Any) -> httpx2.Response:
    return httpx2.post(
        f"{pair.executor}/v1/runs",
        json={"plan_id": plan["plan_id"], "version": plan["version"], **body},
        headers=pair.h(pair.submitter),
        timeout=30,
    )


def _finished(pair: Pair, run_id: str, statuses: tuple[str, ...] = ("succeeded", "failed")) -> Any:
    def check() -> dict[str, Any]:
        run = httpx2.get(f"{pair.executor}/v1/runs/{run_id}", headers=pair.h(pair.operator))
        body: dict[str, Any] = run.json()
        assert body["status"] in statuses, body["status"]
        return body

    return eventually(check, timeout_s=60)


def _act(pair: Pair, run_id: str, path: str, key: str | None = None, **body: Any) -> Any:
    return httpx2.post(
        f"{pair.executor}/v1/runs/{run_id}/{path}",
        json=body or None,
        headers=pair.h(key or pair.operator),
        timeout=30,
    )


def test_fifty_concurrent_submissions_with_one_key_make_one_run(
    ops: Pair, sink: RecordingServer
) -> None:
    plan = _plan(ops, [post(sink, "once", "once")])
    headers = {**ops.h(ops.submitter), "Idempotency-Key": "order-42"}
    body = {"plan_id": plan["plan_id"], "version": plan["version"]}

    def submit(_: int) -> httpx2.Response:
        return httpx2.post(f"{ops.executor}/v1/runs", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(submit, range(50)))
    assert sorted({r.status_code for r in responses}) == [200, 201]
    assert [r.status_code for r in responses].count(201) == 1
    run_ids = {r.json()["run_id"] for r in responses}
    assert len(run_ids) == 1
    other = httpx2.post(
        f"{ops.executor}/v1/runs", json={**body, "budget_usd": 5}, headers=headers, timeout=30
    )
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["type"] == PROBLEM + "idempotency-key-reused"
    _finished(ops, run_ids.pop())
    assert sink.stats()["effects_by_name"] == {"once": 1}


def test_a_dry_run_over_the_api_calls_nothing(ops: Pair, sink: RecordingServer) -> None:
    plan = _plan(ops, [post(sink, "charge", "charge"), {"id": "n", "tool": "noop"}])
    created = _start(ops, plan, mode="dry_run")
    assert created.status_code == 201, created.text
    run = _finished(ops, created.json()["run_id"])
    assert (run["status"], run["mode"]) == ("succeeded", "dry_run")
    assert sink.stats()["requests"] == 0
    again = _start(ops, plan, mode="dry_run")
    assert again.json()["run_id"] != run["run_id"]  # a preview is not the plan's one run


def test_retry_fork_and_replay_of_a_failed_run(ops: Pair, sink: RecordingServer) -> None:
    sink.fail("b", times=1, status=400)
    plan = _plan(ops, [post(sink, "a", "a"), post(sink, "b", "b", depends_on=["a"])])
    first = _finished(ops, _start(ops, plan).json()["run_id"])
    assert first["status"] == "failed"
    assert sink.stats()["effects_by_name"] == {"a": 1}

    retried = _act(ops, first["run_id"], "retry")
    assert retried.status_code == 201, retried.text
    retry = _finished(ops, retried.json()["run_id"])
    assert (retry["status"], retry["parent_run_id"]) == ("succeeded", first["run_id"])
    assert sink.stats()["effects_by_name"] == {"a": 1, "b": 1}  # a carried over, not re-run
    again = _act(ops, first["run_id"], "retry")
    assert (again.status_code, again.json()["run_id"]) == (200, retry["run_id"])

    forked = _act(ops, retry["run_id"], "fork", from_step="b")
    assert forked.status_code == 201, forked.text
    fork = _finished(ops, forked.json()["run_id"])
    assert fork["status"] == "succeeded"
    assert fork["fork_from_step"] == "b"
    assert sink.stats()["effects_by_name"] == {"a": 1, "b": 2}  # b is a new call

    requests = sink.stats()["requests"]
    replayed = _act(ops, fork["run_id"], "replay")
    assert replayed.status_code == 201, replayed.text
    replay = _finished(ops, replayed.json()["run_id"])
    assert (replay["status"], replay["mode"]) == ("succeeded", "replay")
    assert sink.stats()["requests"] == requests  # nothing called
    assert [s["output"] for s in replay["steps"]] == [s["output"] for s in fork["steps"]]


def test_operator_actions_check_role_tenant_and_state(ops: Pair, sink: RecordingServer) -> None:
    plan = _plan(ops, [{"id": "n", "tool": "noop"}])
    run = _finished(ops, _start(ops, plan).json()["run_id"])
    run_id = run["run_id"]
    assert _act(ops, run_id, "retry", key=ops.submitter).status_code == 403
    for action, body in (
        ("retry", {}),
        ("replay", {}),
        ("resume", {}),
        ("fork", {"from_step": "n"}),
        ("steps/n/resolve", {"action": "retry"}),
    ):
        response = _act(ops, run_id, action, key=ops.other_tenant, **body)
        assert response.status_code == 404, (action, response.text)
        assert response.json()["type"] == PROBLEM + "not-found"
    resumed = _act(ops, run_id, "resume")
    assert resumed.status_code == 409 and "not dead_letter" in resumed.json()["detail"]
    resolved = _act(ops, run_id, "steps/n/resolve", action="retry")
    assert resolved.status_code == 409 and resolved.json()["type"] == PROBLEM + "conflict"
    assert _act(ops, run_id, "fork", from_step="nope").status_code == 404
    bad = _act(ops, run_id, "steps/n/resolve", action="explode")
    assert bad.status_code == 422 and bad.json()["type"] == PROBLEM + "validation-error"


def test_an_approval_for_arguments_the_approver_did_not_see_is_refused(
    ops: Pair, sink: RecordingServer
) -> None:
    plan = _plan(
        ops,
        [
            {"id": "amount", "tool": "noop", "args": {"value": 120}},
            {
                **post(sink, "pay", "pay", depends_on=["amount"]),
                "args": {
                    "method": "POST",
                    "url": f"{sink.base_url}/effects/pay",
                    "json": {"amount": {"$ref": "amount.output/echo"}},
                },
            },
        ],
    )
    gated = {"amount": False, "pay": True}
    assert {s["id"]: s["requires_approval"] for s in plan["plan"]["steps"]} == gated
    run_id = _start(ops, plan).json()["run_id"]
    paused = _finished(ops, run_id, ("paused",))
    gate = paused["steps"][1]
    assert gate["resolved_args"]["json"] == {"amount": 120}
    url = f"{ops.executor}/v1/runs/{run_id}/steps/pay/approval"
    stale = httpx2.post(
        url,
        json={"decision": "approve", "args_hash": "sha256:" + "a" * 64},
        headers=ops.h(ops.approver),
    )
    assert stale.status_code == 409, stale.text
    assert gate["args_hash"] in stale.json()["detail"]
    ok = httpx2.post(
        url,
        json={"decision": "approve", "comment": "seen", "args_hash": gate["args_hash"]},
        headers=ops.h(ops.approver),
    )
    assert ok.status_code == 200 and ok.json()["recorded"] is True
    done = _finished(ops, run_id)
    assert done["status"] == "succeeded"
    assert done["approvals"][0]["args_hash"] == gate["args_hash"]
    assert sink.stats()["effects_by_name"] == {"pay": 1}


def _wire(steps: list[dict[str, Any]]) -> str:
    draft = PlanDraft.model_validate({"steps": steps, "rationale": "r", "confidence": 0.9})
    return json.dumps(draft_to_wire(draft))


def test_a_failed_step_asks_the_planner_for_a_revision_and_carries_finished_steps(
    db_url: str, keys_for: dict[str, str], tmp_path: Path, sink: RecordingServer
) -> None:
    sink.reset()
    sink.fail("primary", times=100, status=400)
    first = [
        post(sink, "reserve", "reserve"),
        {**post(sink, "primary", "notify", depends_on=["reserve"]), "on_failure": "replan"},
    ]
    revised = [
        post(sink, "reserve", "reserve"),
        {**post(sink, "backup", "notify", depends_on=["reserve"]), "on_failure": "replan"},
    ]
    with ScriptedLLM() as llm:
        llm.script([_wire(first), _wire(revised)])
        env = {
            **_sink_env(sink),
            "PLANEXEC_LLM_BASE_URL": llm.base_url,
            "PLANEXEC_LLM_API_KEY": "sk-test",
            "PLANEXEC_MAX_REPLANS": "2",
        }
        with start_pair(db_url, keys_for, tmp_path, env) as pair:
            response = httpx2.post(
                f"{pair.planner}/v1/plans",
                json={"intent": "reserve then notify", "backend": "openai"},
                headers=pair.h(pair.submitter),
            )
            assert response.status_code == 201, response.text
            plan = response.json()
            assert plan["status"] == "ready", plan
            run_id = _start(pair, plan).json()["run_id"]
            paused = _finished(pair, run_id, ("paused",))
            assert paused["plan_version"] == 2
            assert paused["replans"] == 1
            notify = paused["steps"][1]
            assert (notify["step_id"], notify["status"]) == ("notify", "awaiting_approval")
            approval = httpx2.post(
                f"{pair.executor}/v1/runs/{run_id}/steps/notify/approval",
                json={"decision": "approve", "args_hash": notify["args_hash"]},
                headers=pair.h(pair.approver),
            )
            assert approval.status_code == 200, approval.text
            done = _finished(pair, run_id)
            events = httpx2.get(
                f"{pair.executor}/v1/runs/{run_id}/events",
                params={"follow": "false"},
                headers=pair.h(pair.operator),
            ).text
    assert done["status"] == "succeeded"
    assert sink.stats()["effects_by_name"] == {"reserve": 1, "backup": 1}
    replanned = [
        json.loads(line[5:])
        for line in events.splitlines()
        if line.startswith("data:") and '"run.replanned"' in line
    ]
    assert len(replanned) == 1
    payload = replanned[0]["payload"]
    assert (payload["from_version"], payload["to_version"]) == (1, 2)
    assert payload["carried"] == ["reserve"] and payload["fresh"] == ["notify"]
    assert payload["approval_required"] == ["notify"]
    decision = next(d for d in done["policy_decisions"] if d["step_id"] == "notify")
    assert "planexec.revision.new-side-effect" in decision["rule_ids"]


def test_a_run_stays_on_its_plan_version_when_a_new_one_is_published(
    ops: Pair, sink: RecordingServer
) -> None:
    """R9: v2 is published while the run waits at a gate; the run finishes on v1."""
    plan = _plan(ops, [post(sink, "v1", "pay")])
    run_id = _start(ops, plan).json()["run_id"]
    paused = _finished(ops, run_id, ("paused",))
    revised = httpx2.post(
        f"{ops.planner}/v1/plans/{plan['plan_id']}/revisions",
        json={"base_version": 1, "draft": {"steps": [post(sink, "v2", "pay")]}},
        headers=ops.h(ops.submitter),
    )
    assert revised.status_code == 201, revised.text
    assert revised.json()["version"] == 2
    gate = paused["steps"][0]
    approval = httpx2.post(
        f"{ops.executor}/v1/runs/{run_id}/steps/pay/approval",
        json={"decision": "approve", "args_hash": gate["args_hash"]},
        headers=ops.h(ops.approver),
    )
    assert approval.status_code == 200, approval.text
    done = _finished(ops, run_id)
    assert done["status"] == "succeeded"
    assert (done["plan_version"], done["content_hash"]) == (1, plan["content_hash"])
    assert sink.stats()["effects_by_name"] == {"v1": 1}
