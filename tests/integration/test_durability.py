"""Durability on a real database: sagas, gates, budgets, modes, heartbeats, pinning, rescue.

Effects are counted at the receiving end (the recording server), not in planexec's tables.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from executor_service.engine.webhook import signature
from executor_service.store.operator import ActionRefused
from executor_service.tools.base import InvocationContext, ToolError, ToolResult
from executor_service.tools.http_request import HttpRequestTool
from executor_service.tools.netguard import NetPolicy
from executor_service.tools.noop import NoopTool
from executor_service.tools.transform import TransformTool
from shared_schemas import ToolSpec
from shared_schemas.canonical import sha256_digest

from ..support.history import RunHistory, assert_legal
from ..support.recording_server import RecordingServer
from ..support.threaded_server import ThreadedServer
from .engine_env import KEY, EngineEnv, engine_env, make_plan

FAST = {"max_attempts": 2, "initial_backoff_s": 0.05, "max_backoff_s": 0.1}


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


class PricedTool:
    """A free-standing tool with a cost estimate, to exercise budgets."""

    def __init__(self, cost_usd: float) -> None:
        self._spec = ToolSpec(
            name="priced", idempotent=True, cost_usd=cost_usd, output_schema={"type": "object"}
        )

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        return ToolResult({"charged": self._spec.cost_usd})


class ProgressTool:
    """Heartbeats once, then hangs on its first attempt; resumes from the details after."""

    spec = ToolSpec(name="progress", idempotent=True, output_schema={"type": "object"})

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        if ctx.heartbeat_details is None:
            ctx.heartbeat({"done": 40})
            await asyncio.sleep(3600)
            raise ToolError("unreachable", retryable=False)
        return ToolResult({"resumed_from": ctx.heartbeat_details})


def _adapters(sink: RecordingServer) -> list[Any]:
    port = int(sink.base_url.rsplit(":", 1)[1])
    policy = NetPolicy(
        allowed_ports=frozenset({port}), allowed_networks=frozenset({"127.0.0.1/32"})
    )
    return [NoopTool(), TransformTool(), HttpRequestTool(policy), PricedTool(0.4), ProgressTool()]


@pytest.fixture
async def env(db_url: str, sink: RecordingServer) -> AsyncIterator[EngineEnv]:
    sink.reset()
    async with engine_env(db_url, _adapters(sink), approval_timeout_s=None) as environment:
        yield environment


def call(sink: RecordingServer, name: str, step_id: str, **extra: Any) -> dict[str, Any]:
    """A step that makes one effect ``name`` at the sink; undone by an ``undo-<name>`` effect."""
    return {
        "id": step_id,
        "tool": "http.request",
        "args": {"method": "POST", "url": f"{sink.base_url}/effects/{name}", "json": {"n": 1}},
        "retry": FAST,
        "compensation": {
            "tool": "http.request",
            "args": {
                "method": "POST",
                "url": f"{sink.base_url}/effects/undo-{name}",
                "json": {"undo": {"$ref": f"{step_id}.output/json/effect"}},
            },
        },
        **extra,
    }


def check_history(events: list[dict[str, Any]], *, plan: dict[str, Any]) -> None:
    """The R16 checker over one run's events."""
    depends_on = {s["id"]: tuple(s.get("depends_on") or ()) for s in plan["steps"]}
    run_id = str(events[0]["run_id"])
    assert_legal([RunHistory(run_id, events, depends_on)])


def effects(sink: RecordingServer) -> list[str]:
    return [e["name"] for e in sink.log() if e["outcome"] == "effect"]


async def test_failed_run_compensates_in_reverse_order_each_once(
    env: EngineEnv, sink: RecordingServer
) -> None:
    sink.fail("d", times=100, status=400)
    run_id = await env.start(
        [
            call(sink, "a", "a"),
            call(sink, "b", "b", depends_on=["a"]),
            call(sink, "c", "c", depends_on=["b"]),
            call(sink, "d", "d", depends_on=["c"]),
            call(sink, "e", "e", depends_on=["d"]),
        ]
    )
    run = await env.wait_status(run_id, {"failed", "succeeded"})
    assert run["status"] == "failed"
    assert effects(sink) == ["a", "b", "c", "undo-c", "undo-b", "undo-a"]
    statuses = {s["step_id"]: s["status"] for s in run["steps"]}
    assert statuses == {
        "a": "compensated",
        "b": "compensated",
        "c": "compensated",
        "d": "failed",
        "e": "cancelled",
    }
    assert run["error"]["compensated_steps"] == ["a", "b", "c"]
    kinds = [(a["step_id"], a["kind"], a["status"]) for a in run["attempts"]]
    assert ("c", "compensation", "succeeded") in kinds
    events = await env.events(run_id)
    check_history(events, plan=run["plan"])
    assert [e["step_id"] for e in events if e["type"] == "compensation.succeeded"] == [
        "c",
        "b",
        "a",
    ]


async def test_a_compensation_that_fails_leaves_the_effect_standing_and_says_so(
    env: EngineEnv, sink: RecordingServer
) -> None:
    sink.fail("undo-a", times=100, status=400)
    sink.fail("boom", times=100, status=400)
    run_id = await env.start([call(sink, "a", "a"), call(sink, "boom", "b", depends_on=["a"])])
    run = await env.wait_status(run_id, {"failed", "succeeded"})
    assert run["status"] == "failed"
    assert run["error"]["compensation_failed"] == ["a"]
    assert run["steps"][0]["status"] == "succeeded"
    assert effects(sink) == ["a"]


async def test_approval_is_bound_to_the_hash_of_the_resolved_arguments(
    env: EngineEnv, sink: RecordingServer
) -> None:
    run_id = await env.start(
        [
            {"id": "look", "tool": "noop", "args": {"echo": {"to": "ops@example.com"}}},
            {
                **call(sink, "mail", "send"),
                "depends_on": ["look"],
                "requires_approval": True,
            },
        ]
    )
    paused = await env.wait_status(run_id, {"paused"})
    gate = paused["steps"][1]
    assert gate["status"] == "awaiting_approval"
    assert gate["args_hash"] == sha256_digest(gate["resolved_args"])
    stale = await env.queries.record_approval(
        "acme", run_id, "send", decision="approve", by="boss", comment=None,
        args_hash="sha256:" + "0" * 64,
    )  # fmt: skip
    assert not stale.recorded and stale.existing is None
    assert stale.gate is not None and stale.gate["args_hash"] == gate["args_hash"]
    decisions = await asyncio.gather(
        *(
            env.queries.record_approval(
                "acme",
                run_id,
                "send",
                decision="approve",
                by=f"boss{i}",
                comment="ok",
                args_hash=gate["args_hash"],
            )
            for i in range(10)
        )
    )
    assert sum(d.recorded for d in decisions) == 1
    done = await env.wait_status(run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert effects(sink) == ["mail"]
    assert [a["args_hash"] for a in done["approvals"]] == [gate["args_hash"]]
    check_history(await env.events(run_id), plan=done["plan"])


async def test_an_expired_gate_counts_as_a_rejection_and_compensates(
    env: EngineEnv, sink: RecordingServer
) -> None:
    run_id = await env.start(
        [
            call(sink, "reserve", "reserve"),
            {
                **call(sink, "pay", "pay"),
                "depends_on": ["reserve"],
                "requires_approval": True,
                "approval_timeout_s": 0.5,
            },
        ]
    )
    run = await env.wait_status(run_id, {"failed", "succeeded"}, timeout_s=20)
    assert run["status"] == "failed"
    assert [(a["step_id"], a["decision"], a["decided_by"]) for a in run["approvals"]] == [
        ("pay", "reject", "system:deadline")
    ]
    assert effects(sink) == ["reserve", "undo-reserve"]
    late = await env.queries.record_approval(
        "acme", run_id, "pay", decision="approve", by="boss", comment=None
    )
    assert not late.recorded
    assert late.existing is not None and late.existing["decision"] == "reject"


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> JSONResponse:
        received.append({"headers": dict(request.headers), "body": await request.body()})
        return JSONResponse({"ok": True})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = ThreadedServer(
        Starlette(routes=[Route("/hook", hook, methods=["POST"])]), sock, "hook"
    )
    server.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook", received
    server.stop()


async def test_a_signed_webhook_announces_each_gate(
    db_url: str, sink: RecordingServer, webhook_receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook_receiver
    async with engine_env(db_url, _adapters(sink), webhook_url=url) as env:
        run_id = await env.start([{**call(sink, "x", "x"), "requires_approval": True}])
        await env.wait_status(run_id, {"paused"})
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
    assert len(received) == 1
    headers, body = received[0]["headers"], received[0]["body"]
    event = json.loads(body)
    assert event["type"] == "approval.requested"
    assert (event["run_id"], event["step_id"]) == (str(run_id), "x")
    assert event["args"]["url"].endswith("/effects/x")
    assert event["args_hash"] == sha256_digest(event["args"])
    expected = signature(KEY, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    assert headers["webhook-signature"] == expected


async def test_a_run_over_its_budget_stops_before_the_step_with_a_clear_event(
    env: EngineEnv,
) -> None:
    steps = [
        {"id": f"s{i}", "tool": "priced", "depends_on": [f"s{i - 1}"] if i else []}
        for i in range(4)
    ]
    run_id = await env.start(steps, budget_usd=1.0)
    run = await env.wait_status(run_id, {"failed", "succeeded"})
    assert run["status"] == "failed"
    assert [s["status"] for s in run["steps"]] == [
        "succeeded",
        "succeeded",
        "cancelled",
        "cancelled",
    ]
    assert run["spent_usd"] == pytest.approx(0.8)
    stop = next(e for e in await env.events(run_id) if e["type"] == "run.budget_exceeded")
    assert stop["step_id"] == "s2"
    assert stop["payload"]["scope"] == "run"
    assert stop["payload"]["spent_usd"] == pytest.approx(0.8)


async def test_the_tenant_budget_spans_runs(db_url: str, sink: RecordingServer) -> None:
    async with engine_env(db_url, _adapters(sink), tenant_budget_usd=1.0) as env:
        first = await env.start([{"id": "a", "tool": "priced"}, {"id": "b", "tool": "priced"}])
        assert (await env.wait_status(first, {"succeeded", "failed"}))["status"] == "succeeded"
        second = await env.start([{"id": "a", "tool": "priced"}])
        run = await env.wait_status(second, {"succeeded", "failed"})
    assert run["status"] == "failed"
    assert run["error"]["stopped"]["scope"] == "tenant"


async def test_a_dry_run_previews_the_plan_with_no_side_effect(
    env: EngineEnv, sink: RecordingServer
) -> None:
    steps = [
        call(sink, "charge", "charge", requires_approval=True),
        {"id": "note", "tool": "noop", "depends_on": ["charge"],
         "args": {"echo": {"$ref": "charge.output/status"}}},
    ]  # fmt: skip
    run_id = await env.start(steps, mode="dry_run", dedup_key=None)
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded", run["steps"]
    assert sink.stats()["requests"] == 0
    charge = run["steps"][0]
    assert isinstance(charge["output"]["status"], int)
    assert run["steps"][1]["resolved_args"] == {"echo": charge["output"]["status"]}
    succeeded = [e for e in await env.events(run_id) if e["type"] == "step.succeeded"]
    assert {e["payload"]["mode"] for e in succeeded} == {"dry_run"}


async def test_a_replay_returns_the_recorded_outputs_and_calls_nothing(
    env: EngineEnv, sink: RecordingServer
) -> None:
    plan = make_plan([call(sink, "once", "once"), {"id": "n", "tool": "noop"}], env.registry)
    source = await env.start_plan(plan)
    done = await env.wait_status(source, {"succeeded", "failed"})
    assert effects(sink) == ["once"]
    replay = await env.start_plan(plan, mode="replay", parent_run_id=source)
    replayed = await env.wait_status(replay, {"succeeded", "failed"})
    assert replayed["status"] == "succeeded"
    assert sink.stats()["requests"] == 1
    assert [s["output"] for s in replayed["steps"]] == [s["output"] for s in done["steps"]]


async def test_a_silent_tool_times_out_on_heartbeats_and_the_retry_gets_the_details(
    env: EngineEnv,
) -> None:
    run_id = await env.start(
        [{"id": "long", "tool": "progress", "heartbeat_timeout_s": 0.3, "retry": FAST}]
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded"
    assert run["steps"][0]["output"] == {"resumed_from": {"done": 40}}
    first = run["attempts"][0]
    assert first["error"]["code"] == "heartbeat_timeout"
    assert first["error"]["details"]["heartbeat"] == {"done": 40}


async def test_a_tool_whose_spec_changed_under_the_run_fails_the_step_loudly(
    env: EngineEnv,
) -> None:
    run_id = await env.start(
        [{"id": "n", "tool": "noop"}], tool_specs={"noop": "sha256:" + "1" * 64}
    )
    run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "failed"
    assert run["steps"][0]["error"]["code"] == "tool_spec_changed"


async def test_a_stored_plan_that_no_longer_matches_its_hash_is_never_run(
    db_url: str, sink: RecordingServer
) -> None:
    sink.reset()
    async with engine_env(db_url, _adapters(sink), workers=0) as idle:
        run_id = await idle.start([call(sink, "x", "x")])
        async with idle.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE executor.runs SET plan = jsonb_set(plan,"
                    " '{steps,0,args,url}', to_jsonb(CAST(:url AS text))) WHERE run_id = :id"
                ),
                {"url": f"{sink.base_url}/effects/elsewhere", "id": run_id},
            )
    async with engine_env(db_url, _adapters(sink)) as env:
        run = await env.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "failed"
    assert run["error"]["code"] == "plan_divergence"
    assert sink.stats()["requests"] == 0


async def _crash_mid_call(env: EngineEnv, run_id: uuid.UUID, step_id: str) -> None:
    """Leave the run as a worker killed during a non-idempotent call would: a started
    attempt with no outcome and a lease that has expired."""
    async with env.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE executor.runs SET status = 'running', lease_owner = 'dead-worker',"
                " lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1 min'"
                " WHERE run_id = :id"
            ),
            {"id": run_id},
        )
        await conn.execute(
            text(
                "UPDATE executor.steps SET status = 'running', attempts = 1"
                " WHERE run_id = :id AND step_id = :step"
            ),
            {"id": run_id, "step": step_id},
        )
        await conn.execute(
            text(
                "INSERT INTO executor.attempts (tenant, run_id, step_id, attempt,"
                " idempotency_key, status, started_at) VALUES ('acme', :id, :step, 1,"
                " 'pxs-lost', 'started', now())"
            ),
            {"id": run_id, "step": step_id},
        )
        for event, step in (("run.leased", None), ("step.started", step_id)):
            await conn.execute(
                text(
                    "WITH r AS (UPDATE executor.runs SET next_seq = next_seq + 1"
                    " WHERE run_id = :id RETURNING next_seq - 1 AS seq)"
                    " INSERT INTO executor.run_events (tenant, run_id, seq, type, step_id,"
                    " attempt) SELECT 'acme', :id, seq, :type, :step, 1 FROM r"
                ),
                {"id": run_id, "type": event, "step": step},
            )


@pytest.mark.parametrize(("action", "effects_after"), [("retry", 1), ("mark_succeeded", 0)])
async def test_an_unknown_outcome_waits_for_an_operator_then_resumes(
    db_url: str, sink: RecordingServer, action: str, effects_after: int
) -> None:
    sink.reset()
    steps = [call(sink, "pay", "pay"), {"id": "after", "tool": "noop", "depends_on": ["pay"]}]
    async with engine_env(db_url, _adapters(sink), workers=0) as idle:
        run_id = await idle.start(steps)
        await _crash_mid_call(idle, run_id, "pay")
    async with engine_env(db_url, _adapters(sink), lease_ttl_s=2.0) as env:
        run = await env.wait_status(run_id, {"needs_attention", "succeeded", "failed"})
        assert run["status"] == "needs_attention"
        assert run["steps"][0]["status"] == "needs_attention"
        assert sink.stats()["requests"] == 0  # never called twice by the executor
        refused = await env.operator.resolve_step(
            "acme", run_id, "after", action="retry", output=None, by="op", comment=None
        )
        assert isinstance(refused, ActionRefused)
        resolved = await env.operator.resolve_step(
            "acme", run_id, "pay", action=action, output={"status": 200}, by="op",
            comment="checked with the bank",
        )  # fmt: skip
        assert resolved in ("ready", "succeeded")
        done = await env.wait_status(run_id, {"succeeded", "failed"})
        events = await env.events(run_id)
    assert done["status"] == "succeeded"
    assert sink.stats()["effects"] == effects_after
    resolved_event = next(e for e in events if e["type"] == "step.resolved")
    assert resolved_event["payload"]["by"] == "op"
    check_history(events, plan=done["plan"])


async def test_a_dead_lettered_run_is_not_driven_until_resumed(
    db_url: str, sink: RecordingServer
) -> None:
    sink.reset()
    async with engine_env(db_url, _adapters(sink), workers=0) as idle:
        run_id = await idle.start([{"id": "n", "tool": "noop"}])
        async with idle.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE executor.runs SET status = 'running', recovery_attempts = 3,"
                    " lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1s'"
                    " WHERE run_id = :id"
                ),
                {"id": run_id},
            )
    async with engine_env(db_url, _adapters(sink), max_recoveries=3) as env:
        run = await env.wait_status(run_id, {"dead_letter", "succeeded"})
        assert run["status"] == "dead_letter"
        await asyncio.sleep(0.5)
        assert (await env.queries.run_status("acme", run_id)) == "dead_letter"
        assert await env.operator.resume("acme", run_id, "op")
        assert not await env.operator.resume("acme", run_id, "op")
        done = await env.wait_status(run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    types = [e["type"] for e in await env.events(run_id)]
    assert "run.dead_lettered" in types and "run.resumed" in types
