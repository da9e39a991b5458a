"""The planner, the executor API and a worker as processes: a posted intent runs to the end."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from .conftest import Pair
from .processes import eventually

FAN = {
    "steps": [
        {"id": "seed", "tool": "noop", "args": {"value": [3, 4]}},
        {
            "id": "sum",
            "tool": "transform",
            "depends_on": ["seed"],
            "args": {"data": {"$ref": "seed.output/echo"}, "expression": "sum(@)"},
        },
        {
            "id": "count",
            "tool": "transform",
            "depends_on": ["seed"],
            "args": {"data": {"$ref": "seed.output/echo"}, "expression": "length(@)"},
        },
        {
            "id": "report",
            "tool": "noop",
            "depends_on": ["sum", "count"],
            "args": {"value": {"sum": {"$ref": "sum.output"}, "count": {"$ref": "count.output"}}},
        },
    ]
}


def _run_of(pair: Pair, plan_id: str) -> dict[str, Any]:
    runs = httpx2.get(
        f"{pair.executor}/v1/runs", params={"plan_id": plan_id}, headers=pair.h(pair.submitter)
    ).json()["items"]
    assert runs, "no run yet"
    return runs[0]


def _finished(pair: Pair, run_id: str) -> dict[str, Any]:
    run = httpx2.get(f"{pair.executor}/v1/runs/{run_id}", headers=pair.h(pair.submitter)).json()
    assert run["status"] in ("succeeded", "failed", "cancelled"), run["status"]
    return run


def test_posted_plan_is_dispatched_to_a_worker_process_and_finishes(pair: Pair) -> None:
    response = httpx2.post(
        f"{pair.planner}/v1/plans",
        json={"intent": "sum the seeds", "draft": FAN, "options": {"execute": True}},
        headers=pair.h(pair.submitter),
    )
    assert response.status_code == 201, response.text
    plan = response.json()
    assert plan["status"] == "ready", plan
    summary = eventually(lambda: _run_of(pair, plan["plan_id"]))
    run = eventually(lambda: _finished(pair, summary["run_id"]))
    assert run["status"] == "succeeded", run
    report = next(s for s in run["steps"] if s["step_id"] == "report")
    assert report["output"] == {"ok": True, "echo": {"sum": 7, "count": 2}}
    assert run["content_hash"] == plan["content_hash"]
    # the SSE stream replays the whole history, resumable from an event id
    with httpx2.stream(
        "GET", f"{pair.executor}/v1/runs/{run['run_id']}/events", headers=pair.h(pair.submitter)
    ) as stream:
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run.created" and events[-1]["type"] == "run.succeeded"
    resumed_headers = {**pair.h(pair.submitter), "Last-Event-ID": str(len(events) - 2)}
    with httpx2.stream(
        "GET", f"{pair.executor}/v1/runs/{run['run_id']}/events", headers=resumed_headers
    ) as stream:
        tail = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert [e["seq"] for e in tail] == [len(events) - 1, len(events)]
    # another tenant sees nothing of it
    other = pair.h(pair.other_tenant)
    assert httpx2.get(f"{pair.executor}/v1/runs/{run['run_id']}", headers=other).status_code == 404
    assert (
        httpx2.get(f"{pair.executor}/v1/runs/{run['run_id']}/events", headers=other).status_code
        == 404
    )
    assert httpx2.get(f"{pair.executor}/v1/runs", headers=other).json()["items"] == []


def test_start_a_run_directly_approve_a_gate_and_cancel(pair: Pair) -> None:
    draft = {
        "steps": [
            {"id": "a", "tool": "noop"},
            {
                "id": "call",
                "tool": "http.request",
                "depends_on": ["a"],
                "args": {"url": "http://127.0.0.1:9/never"},
            },
        ]
    }
    plan = httpx2.post(
        f"{pair.planner}/v1/plans",
        json={"intent": "call out", "draft": draft},
        headers=pair.h(pair.submitter),
    ).json()
    assert plan["status"] == "ready", plan
    start = httpx2.post(
        f"{pair.executor}/v1/runs",
        json={"plan_id": plan["plan_id"], "version": 1},
        headers=pair.h(pair.submitter),
    )
    assert start.status_code == 201, start.text
    again = httpx2.post(
        f"{pair.executor}/v1/runs",
        json={"plan_id": plan["plan_id"], "version": 1},
        headers=pair.h(pair.submitter),
    )
    assert again.status_code == 200 and again.json()["run_id"] == start.json()["run_id"]
    run_id = start.json()["run_id"]
    # http.request is a write tool without an approval requirement here; the plan runs and the
    # blocked target (loopback, not allowlisted) fails the step without retries
    run = eventually(lambda: _finished(pair, run_id))
    call = next(s for s in run["steps"] if s["step_id"] == "call")
    assert call["error"]["code"] == "blocked_target"
    assert call["attempts"] == 1

    wait_plan = httpx2.post(
        f"{pair.planner}/v1/plans",
        json={
            "intent": "wait",
            "draft": {
                "steps": [{"id": "w", "tool": "wait", "args": {"seconds": 60}, "timeout_s": 120}]
            },
        },
        headers=pair.h(pair.submitter),
    ).json()
    started = httpx2.post(
        f"{pair.executor}/v1/runs",
        json={"plan_id": wait_plan["plan_id"], "version": 1},
        headers=pair.h(pair.submitter),
    ).json()
    eventually(lambda: _assert_status(pair, started["run_id"], "running"))
    denied = httpx2.post(
        f"{pair.executor}/v1/runs/{started['run_id']}/cancel", headers=pair.h(pair.submitter)
    )
    assert denied.status_code == 403
    assert (
        httpx2.post(
            f"{pair.executor}/v1/runs/{started['run_id']}/cancel", headers=pair.h(pair.other_tenant)
        ).status_code
        == 404
    )
    cancelled = httpx2.post(
        f"{pair.executor}/v1/runs/{started['run_id']}/cancel", headers=pair.h(pair.operator)
    )
    assert cancelled.status_code == 202
    final = eventually(lambda: _finished(pair, started["run_id"]), timeout_s=30)
    assert final["status"] == "cancelled"


def _assert_status(pair: Pair, run_id: str, status: str) -> None:
    run = httpx2.get(f"{pair.executor}/v1/runs/{run_id}", headers=pair.h(pair.submitter)).json()
    assert run["status"] == status, run["status"]


def test_executor_bad_input(pair: Pair) -> None:
    h = pair.h(pair.submitter)
    missing = httpx2.post(
        f"{pair.executor}/v1/runs",
        json={"plan_id": "6f1c1a52-6a1e-4f6e-9d0b-3f2a8c9e0d11", "version": 1},
        headers=h,
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    rejected = httpx2.post(
        f"{pair.planner}/v1/plans",
        json={"intent": "bad", "draft": {"steps": [{"id": "x", "tool": "nope"}]}},
        headers=h,
    ).json()
    refused = httpx2.post(
        f"{pair.executor}/v1/runs", json={"plan_id": rejected["plan_id"], "version": 1}, headers=h
    )
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/plan-refused")
    assert refused.json()["reason"] == "not_ready"
    assert (
        httpx2.post(
            f"{pair.executor}/v1/runs",
            content=b"{",
            headers={**h, "Content-Type": "application/json"},
        ).status_code
        == 400
    )
    assert (
        httpx2.post(f"{pair.executor}/v1/runs", json={"plan_id": "x"}, headers=h).status_code == 422
    )
    assert httpx2.get(f"{pair.executor}/v1/tools").status_code == 401
