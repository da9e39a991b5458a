"""The execution engine on a real database, with real tools over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from executor_service.domain.states import LEGAL_STEP_TRANSITIONS, StepStatus
from executor_service.tools.http_request import HttpRequestTool
from executor_service.tools.netguard import NetPolicy
from executor_service.tools.noop import NoopTool
from executor_service.tools.transform import TransformTool
from executor_service.tools.wait import WaitTool

from ..support.recording_server import RecordingServer
from .engine_env import EngineEnv, engine_env


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
async def env(db_url: str, sink: RecordingServer) -> AsyncIterator[EngineEnv]:
    sink.reset()
    port = int(sink.base_url.rsplit(":", 1)[1])
    policy = NetPolicy(
        allowed_ports=frozenset({port}), allowed_networks=frozenset({"127.0.0.1/32"})
    )
    adapters = [NoopTool(), TransformTool(), WaitTool(), HttpRequestTool(policy)]
    async with engine_env(db_url, adapters) as environment:
        yield environment


def post(sink: RecordingServer, name: str, step_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "tool": "http.request",
        "args": {"method": "POST", "url": f"{sink.base_url}/effects/{name}", "json": {"n": 1}},
        "retry": {"max_attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.2},
        **extra,
    }


def assert_history_is_legal(events: list[dict[str, Any]]) -> None:
    """Gap-free seq; step events only in legal order; no step starts twice at once."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    status: dict[str, StepStatus] = {}
    moves = {
        "step.started": StepStatus.RUNNING,
        "step.succeeded": StepStatus.SUCCEEDED,
        "step.failed": StepStatus.FAILED,
        "step.retry_scheduled": StepStatus.READY,
        "step.skipped": StepStatus.SKIPPED,
        "step.cancelled": StepStatus.CANCELLED,
        "approval.requested": StepStatus.AWAITING_APPROVAL,
        "approval.granted": StepStatus.READY,
    }
    for event in events:
        target = moves.get(event["type"])
        if target is None or event["step_id"] is None:
            continue
        before = status.get(event["step_id"], StepStatus.READY)
        if target is StepStatus.RUNNING:
            assert before in (StepStatus.READY, StepStatus.BLOCKED), event
        elif before is not StepStatus.RUNNING:
            assert (before, target) in LEGAL_STEP_TRANSITIONS, (before, target, event)
        status[event["step_id"]] = target


async def test_fan_out_fan_in_with_refs(env: EngineEnv) -> None:
    run_id = await env.start(
        [
            {"id": "seed", "tool": "noop", "args": {"value": {"items": [1, 2, 3]}}},
            {
                "id": "left",
                "tool": "transform",
                "depends_on": ["seed"],
                "args": {"data": {"$ref": "seed.output/echo/items"}, "expression": "sum(@)"},
            },
            {
                "id": "right",
                "tool": "transform",
                "depends_on": ["seed"],
                "args": {"data": {"$ref": "seed.output/echo/items"}, "expression": "length(@)"},
            },
            {
                "id": "join",
                "tool": "noop",
                "depends_on": ["left", "right"],
                "args": {"value": {"sum": {"$ref": "left.output"}, "n": {"$ref": "right.output"}}},
            },
        ]
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded", run
    steps = {s["step_id"]: s for s in run["steps"]}
    assert steps["join"]["output"] == {"ok": True, "echo": {"sum": 6, "n": 3}}
    assert steps["join"]["resolved_args"] == {"value": {"sum": 6, "n": 3}}
    events = await env.events(run_id)
    assert_history_is_legal(events)
    started = [e["step_id"] for e in events if e["type"] == "step.started"]
    assert started.index("seed") < started.index("left") < started.index("join")
    assert started.index("right") < started.index("join")
    assert events[-1]["type"] == "run.succeeded"


async def test_retryable_503_then_success_makes_one_effect(
    env: EngineEnv, sink: RecordingServer
) -> None:
    sink.fail("flaky", times=2, status=503)
    run_id = await env.start([post(sink, "flaky", "call")])
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded", run
    attempts = [a for a in run["attempts"] if a["step_id"] == "call"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert len({a["idempotency_key"] for a in attempts}) == 1
    stats = sink.stats()
    assert stats["effects_by_name"] == {"flaky": 1}
    assert stats["requests"] == 3
    key = attempts[0]["idempotency_key"]
    assert stats["by_key"][key] == 3  # the key travelled with every attempt
    assert_history_is_legal(await env.events(run_id))


async def test_4xx_is_not_retried(env: EngineEnv, sink: RecordingServer) -> None:
    sink.fail("strict", times=1, status=400)
    run_id = await env.start(
        [post(sink, "strict", "call"), {"id": "after", "tool": "noop", "depends_on": ["call"]}]
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "failed"
    steps = {s["step_id"]: s for s in run["steps"]}
    assert steps["call"]["status"] == "failed"
    assert steps["call"]["attempts"] == 1
    assert steps["call"]["error"]["retryable"] is False
    assert steps["after"]["status"] == "cancelled"
    assert sink.stats()["requests"] == 1
    assert run["error"] == {"failed_steps": ["call"]}


async def test_retry_after_is_honoured(env: EngineEnv, sink: RecordingServer) -> None:
    sink.fail("limited", times=1, status=429, retry_after=1)
    run_id = await env.start([post(sink, "limited", "call")])
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded"
    first, second = sorted((a for a in run["attempts"]), key=lambda a: a["attempt"])
    gap = (second["started_at"] - first["finished_at"]).total_seconds()
    assert gap >= 0.95, gap  # max_backoff_s is 0.2: only Retry-After explains the wait


async def test_timeout_fires_and_is_retried(env: EngineEnv) -> None:
    run_id = await env.start(
        [
            {
                "id": "slow",
                "tool": "wait",
                "args": {"seconds": 30},
                "timeout_s": 0.3,
                "retry": {"max_attempts": 2, "initial_backoff_s": 0.0},
            }
        ]
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"}, timeout_s=10)
    assert run["status"] == "failed"
    attempts = run["attempts"]
    assert [a["error"]["code"] for a in attempts] == ["timeout", "timeout"]
    assert all(a["duration_s"] < 1.5 for a in attempts)


async def test_output_that_breaks_its_criteria_fails_the_step(env: EngineEnv) -> None:
    run_id = await env.start(
        [
            {
                "id": "check",
                "tool": "noop",
                "args": {"value": 3},
                "success_criteria": {
                    "output_schema": {"properties": {"echo": {"type": "string"}}},
                    "assertions": [{"path": "/echo", "op": "gt", "value": 5}],
                },
            }
        ]
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "failed"
    error = run["steps"][0]["error"]
    assert error["code"] == "output_invalid"
    assert "/echo" in error["message"]


async def test_ref_that_resolves_to_nothing_fails_the_step_not_the_worker(env: EngineEnv) -> None:
    run_id = await env.start(
        [
            {"id": "a", "tool": "noop", "args": {"value": {"x": 1}}},
            {
                "id": "b",
                "tool": "noop",
                "depends_on": ["a"],
                "args": {"value": {"$ref": "a.output/echo/missing"}},
            },
        ]
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "failed"
    assert run["steps"][1]["error"]["code"] == "ref_unresolved"
    # the worker is still alive and runs the next plan
    ok = await env.start([{"id": "a", "tool": "noop"}])
    assert (await env.wait_status(ok, {"succeeded", "failed"}))["status"] == "succeeded"


async def test_skip_on_failure_goes_on(env: EngineEnv, sink: RecordingServer) -> None:
    sink.fail("optional", times=1, status=400)
    run_id = await env.start(
        [
            post(sink, "optional", "opt", on_failure="skip"),
            {"id": "next", "tool": "noop", "depends_on": ["opt"]},
        ]
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded"
    assert [s["status"] for s in run["steps"]] == ["skipped", "succeeded"]


async def test_non_idempotent_call_is_recorded_as_started_before_it_is_made(
    env: EngineEnv, sink: RecordingServer
) -> None:
    sink.slow("slowpost", 1.0)
    run_id = await env.start([post(sink, "slowpost", "call")])
    run = await env.wait_status(run_id, {"running"})
    for _ in range(40):
        run = await env.wait_status(run_id, {"running", "succeeded"})
        if run["attempts"]:
            break
        await asyncio.sleep(0.05)
    assert run["steps"][0]["status"] == "running"
    assert run["attempts"][0]["status"] == "started"
    done = await env.wait_status(run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    sink.slow("slowpost", 0)


async def test_approval_gate_pauses_then_runs_once_approved(
    env: EngineEnv, sink: RecordingServer
) -> None:
    run_id = await env.start(
        [
            {"id": "look", "tool": "noop"},
            {**post(sink, "gated", "send"), "depends_on": ["look"], "requires_approval": True},
        ]
    )
    paused = await env.wait_status(run_id, {"paused"})
    assert {s["step_id"]: s["status"] for s in paused["steps"]} == {
        "look": "succeeded",
        "send": "awaiting_approval",
    }
    assert paused["lease_owner"] is None  # a paused run holds no lease
    assert sink.stats()["effects_by_name"].get("gated") is None
    outcome = await env.queries.record_approval(
        "acme", run_id, "send", decision="approve", by="boss", comment="ok"
    )
    assert outcome.recorded
    again = await env.queries.record_approval(
        "acme", run_id, "send", decision="reject", by="other", comment=None
    )
    assert (
        again.recorded is False
        and again.existing is not None
        and again.existing["decision"] == "approve"
    )
    done = await env.wait_status(run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert sink.stats()["effects_by_name"]["gated"] == 1
    types = [e["type"] for e in await env.events(run_id)]
    assert "approval.requested" in types and "approval.granted" in types
    assert types.index("approval.granted") < types.index("run.succeeded")


async def test_rejected_gate_fails_the_run(env: EngineEnv, sink: RecordingServer) -> None:
    run_id = await env.start([{**post(sink, "never", "send"), "requires_approval": True}])
    await env.wait_status(run_id, {"paused"})
    await env.queries.record_approval(
        "acme", run_id, "send", decision="reject", by="boss", comment="no"
    )
    done = await env.wait_status(run_id, {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert done["steps"][0]["error"]["code"] == "approval_rejected"
    assert sink.stats()["effects_by_name"].get("never") is None


async def test_cancel_a_running_run(env: EngineEnv) -> None:
    run_id = await env.start(
        [{"id": "long", "tool": "wait", "args": {"seconds": 20}, "timeout_s": 60}]
    )
    await env.wait_status(run_id, {"running"})
    await env.queries.cancel("acme", run_id)
    done = await env.wait_status(run_id, {"cancelled"}, timeout_s=10)
    assert done["steps"][0]["status"] == "cancelled"


async def test_another_tenant_cannot_see_or_touch_a_run(env: EngineEnv) -> None:
    run_id = await env.start([{"id": "a", "tool": "noop"}])
    await env.wait_status(run_id, {"succeeded"})
    assert await env.queries.get_run("globex", run_id) is None
    assert await env.queries.events("globex", run_id, 0) == []
    assert await env.queries.cancel("globex", run_id) is None


async def test_sequential_idempotent_steps_cost_one_commit_each(db_url: str) -> None:
    """Create (1) + lease (1) + one commit per step, the last one also ending the run."""
    async with engine_env(db_url, [NoopTool()], poll_s=60, heartbeat_s=60) as env:

        async def commits() -> int:
            async with env.engine.connect() as conn:
                await conn.execute(text("SELECT pg_stat_force_next_flush()"))
                value = await conn.scalar(
                    text(
                        "SELECT xact_commit FROM pg_stat_database"
                        " WHERE datname = current_database()"
                    )
                )
            return int(value)

        steps = [{"id": "s0", "tool": "noop"}] + [
            {"id": f"s{i}", "tool": "noop", "depends_on": [f"s{i - 1}"]} for i in range(1, 10)
        ]
        await env.wait_status(await env.start(steps), {"succeeded"})
        await asyncio.sleep(0.5)
        before = await commits()
        second = await env.start(steps)
        await asyncio.sleep(1.5)  # wait without querying the database
        after = await commits()
        assert (await env.wait_status(second, {"succeeded"}))["status"] == "succeeded"
        # each commits() call is itself 2 transactions (flush + read)
        assert after - before - 2 <= 12, after - before
