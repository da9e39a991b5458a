"""Sensitive business flows (RELIABILITY S6, OWASP API6): cumulative limits, not per step.

The AgentDojo banking injection goal sends money "in small increments of no more than
$10,000": every step passes a per-step rule, the sum does not. A tool declares a meter on a
numeric argument (``ToolSpec.meter``); policy and the executor judge running totals.

* Plan time: the planner app (draft backend, real Cedar engine, real database) with a catalog
  holding a ``bank.transfer`` tool metered on ``amount`` in USD.
* Run time: the executor engine on a real database calls ``bank.transfer``, imported from an
  OpenAPI document, over loopback HTTP to the recording server; what was called is counted at
  the receiving end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from executor_service.tools.openapi_import import import_openapi
from planner_service.app import create_app
from planner_service.settings import PlannerSettings
from shared_schemas import SideEffect, ToolCatalog, ToolMeter, ToolSpec, catalog_version

from ..conftest import Keys
from ..integration.engine_env import EngineEnv, engine_env
from ..support.demo_catalog import demo_tools
from ..support.recording_server import RecordingServer

TRANSFER_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"amount": {}, "to": {"type": "string"}},
    "required": ["amount", "to"],
}


def transfer_tool(**meter: Any) -> ToolSpec:
    return ToolSpec(
        name="bank.transfer",
        description="Send money to a recipient.",
        input_schema=TRANSFER_INPUT,
        side_effect=SideEffect.WRITE,
        meter=ToolMeter(arg="amount", unit="USD", **meter),
    )


def transfers(n: int, amount: Any = 1500, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": f"t{i}", "tool": "bank.transfer", "args": {"amount": amount, "to": "GB29NWBK"}}
        for i in range(start, start + n)
    ]


# -- plan time ------------------------------------------------------------------------------


@asynccontextmanager
async def planner(
    db_url: str, tmp_path: Path, tool: ToolSpec, policy: str | None = None
) -> AsyncIterator[httpx2.AsyncClient]:
    tools = [*demo_tools(), tool]
    catalog = ToolCatalog(catalog_version=catalog_version(tools), tools=tools)
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(catalog.model_dump_json(), encoding="utf-8")
    policy_dir = None
    if policy is not None:
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir()
        (policy_dir / "tenant-acme.cedar").write_text(policy, encoding="utf-8")
    settings = PlannerSettings(
        database_url=db_url,
        env="test",
        signing_key="k" * 40,
        catalog_file=catalog_file,
        policy_dir=policy_dir,
        cache_ttl_s=0,
        _env_file=None,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://planner") as client:
            yield client


async def plan(client: httpx2.AsyncClient, key: str, steps: list[dict[str, Any]]) -> Any:
    response = await client.post(
        "/v1/plans",
        json={"intent": "pay the supplier", "draft": {"steps": steps}},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def revise(
    client: httpx2.AsyncClient, key: str, plan_id: str, steps: list[dict[str, Any]]
) -> Any:
    response = await client.post(
        f"/v1/plans/{plan_id}/revisions",
        json={"draft": {"steps": steps}},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 201, response.text
    return response.json()


def decisions(body: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {d["step_id"]: (d["decision"], d["rule_ids"]) for d in body["policy_decisions"]}


async def test_ten_transfers_of_1500_are_denied_where_one_is_allowed(
    db_url: str, keys: Keys, tmp_path: Path
) -> None:
    async with planner(db_url, tmp_path, transfer_tool(run_limit=10_000)) as client:
        one = await plan(client, keys.acme_submitter, transfers(1))
        ten = await plan(client, keys.acme_submitter, transfers(10))
    assert one["status"] == "ready"
    assert decisions(one)["t0"][0] == "allow"
    assert ten["status"] == "rejected"
    judged = decisions(ten)
    # 6 x 1500 = 9000 fits; the 7th makes 10500 > 10000, and every later step is over too
    assert [judged[f"t{i}"][0] for i in range(10)] == ["allow"] * 6 + ["deny"] * 4
    assert judged["t6"][1] == ["planexec.metered-over-run-limit"]


async def test_a_tenant_threshold_on_the_running_total_gates_the_steps_over_it(
    db_url: str, keys: Keys, tmp_path: Path
) -> None:
    rule = """
    @id("tenant.acme.transfers-over-10000-need-approval")
    forbid (principal, action == Planexec::Action::"invoke_unattended",
            resource == Planexec::Tool::"bank.transfer")
    when { principal.tenant == "acme" && context.cumulative_amount > 10000 };
    """
    async with planner(db_url, tmp_path, transfer_tool(), rule) as client:
        one = await plan(client, keys.acme_submitter, transfers(1))
        ten = await plan(client, keys.acme_submitter, transfers(10))
        other = await plan(client, keys.globex_submitter, transfers(10))
    assert one["status"] == "ready"
    assert ten["status"] == "ready"  # runnable; the executor holds the gated steps for a person
    gated = [s["id"] for s in ten["steps"] if s["requires_approval"]]
    assert gated == ["t6", "t7", "t8", "t9"]
    assert decisions(ten)["t6"] == (
        "require_approval",
        ["tenant.acme.transfers-over-10000-need-approval"],
    )
    assert other["status"] == "ready"  # the tenant's file narrows acme only


async def test_an_amount_known_only_at_run_time_needs_approval(
    db_url: str, keys: Keys, tmp_path: Path
) -> None:
    steps = [
        {"id": "quote", "tool": "transform", "args": {"data": {"n": 1500}, "expression": "n"}},
        {
            "id": "pay",
            "tool": "bank.transfer",
            "args": {"amount": {"$ref": "quote.output"}, "to": "GB29NWBK"},
            "depends_on": ["quote"],
        },
    ]
    async with planner(db_url, tmp_path, transfer_tool(run_limit=10_000)) as client:
        body = await plan(client, keys.acme_submitter, steps)
    assert [s["requires_approval"] for s in body["steps"]] == [False, True]
    assert decisions(body)["pay"] == (
        "require_approval",
        ["planexec.metered-unknown-amount-needs-approval"],
    )


async def test_a_revision_cannot_start_the_running_total_again(
    db_url: str, keys: Keys, tmp_path: Path
) -> None:
    async with planner(db_url, tmp_path, transfer_tool(run_limit=10_000)) as client:
        v1 = await plan(client, keys.acme_submitter, transfers(6))  # 9000
        # v2 drops the six transfers (they may have run) and splits more into new steps
        v2 = await revise(client, keys.acme_submitter, v1["plan_id"], transfers(5, start=6))
        # v3 redefines v1's steps with smaller amounts: the latest definition of an id counts,
        # and the rejected v2 never runs, so it counts for nothing
        v3 = await revise(
            client, keys.acme_submitter, v1["plan_id"], transfers(6, 100) + transfers(1, 1500, 6)
        )
        # v4 drops all of v3 (2100) and adds six new transfers: the sixth is over
        v4 = await revise(client, keys.acme_submitter, v1["plan_id"], transfers(6, start=20))
    assert v1["status"] == "ready"
    assert v2["status"] == "rejected"
    assert decisions(v2)["t6"] == ("deny", ["planexec.metered-over-run-limit"])  # 10500
    assert v3["status"] == "ready"  # 600 + 1500
    assert v4["status"] == "rejected"
    judged = decisions(v4)
    assert [judged[f"t{i}"][0] for i in range(20, 26)] == ["allow"] * 5 + ["deny"]  # 11100


# -- run time -------------------------------------------------------------------------------

BANK_OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "a bank, played by the recording server", "version": "1"},
    "paths": {
        "/unsafe/{name}": {
            "post": {
                "operationId": "transfer",
                "x-planexec-side-effect": "write",
                "x-planexec-idempotent": False,
                "x-planexec-meter": {
                    "arg": "amount",
                    "unit": "USD",
                    "run_limit": 10_000,
                    "tenant_daily_limit": 12_000,
                },
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "amount", "in": "query", "required": True, "schema": {}},
                ],
                "responses": {"200": {"description": "the effect made"}},
            }
        },
        "/effects/{name}": {
            "post": {
                "operationId": "refund",
                "x-planexec-side-effect": "write",
                "x-planexec-idempotent": True,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "the effect made"}},
            }
        },
    },
}


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@asynccontextmanager
async def bank_env(db_url: str, sink: RecordingServer, **config: Any) -> AsyncIterator[EngineEnv]:
    from executor_service.tools.noop import NoopTool

    sink.reset()
    async with httpx2.AsyncClient() as client:
        imported = import_openapi(
            BANK_OPENAPI, prefix="bank", base_url=sink.base_url, client=client
        )
        assert not imported.warnings
        async with engine_env(db_url, [NoopTool(), *imported.tools], **config) as env:
            yield env


def paid(name: str, amount: Any, after: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": name,
        "tool": "bank.transfer",
        "args": {"name": name, "amount": amount},
        "depends_on": [after] if after else [],
        "compensation": {"tool": "bank.refund", "args": {"name": f"refund-{name}"}},
        **extra,
    }


def chain(n: int, amount: Any = 1500, prefix: str = "t") -> list[dict[str, Any]]:
    return [paid(f"{prefix}{i}", amount, f"{prefix}{i - 1}" if i else None) for i in range(n)]


def called(sink: RecordingServer) -> dict[str, int]:
    return dict(sink.stats()["effects_by_name"])


async def test_the_call_over_the_run_cap_is_never_made_and_the_run_is_compensated(
    db_url: str, sink: RecordingServer
) -> None:
    async with bank_env(db_url, sink) as env:
        run_id = await env.start(chain(10))
        run = await env.wait_status(run_id, {"failed", "succeeded", "needs_attention"})
        events = await env.events(run_id)
    assert run["status"] == "failed"
    effects = called(sink)
    assert {f"t{i}" for i in range(6)} == {k for k in effects if k.startswith("t")}
    assert all(effects.get(f"t{i}", 0) == 0 for i in range(6, 10))  # 0 requests for them
    assert {f"refund-t{i}" for i in range(6)} == {k for k in effects if k.startswith("refund")}
    status = {s["step_id"]: s["status"] for s in run["steps"]}
    assert [status[f"t{i}"] for i in range(10)] == ["compensated"] * 6 + ["cancelled"] * 4
    [stop] = [e for e in events if e["type"] == "run.meter_exceeded"]
    assert stop["step_id"] == "t6"
    assert stop["payload"] | {"limit": float(stop["payload"]["limit"])} == {
        "code": "meter_exceeded",
        "step_id": "t6",
        "scope": "run",
        "tool": "bank.transfer",
        "arg": "amount",
        "unit": "USD",
        "limit": 10000.0,
        "total": "9000",
        "amount": "1500",
    }
    assert run["error"]["stopped"]["code"] == "meter_exceeded"
    started = [e for e in events if e["type"] == "step.started" and e["step_id"] == "t0"]
    assert started[0]["payload"]["metered"] == {
        "tool": "bank.transfer",
        "arg": "amount",
        "unit": "USD",
        "amount": "1500",
    }


async def test_a_reference_resolved_at_run_time_is_metered_too(
    db_url: str, sink: RecordingServer
) -> None:
    steps = [
        {"id": "quote", "tool": "noop", "args": {"value": {"amount": 20_000}}},
        paid("pay", {"$ref": "quote.output/echo/amount"}, "quote"),
    ]
    bogus = [
        {"id": "quote", "tool": "noop", "args": {"value": {"amount": "1e9"}}},
        paid("pay", {"$ref": "quote.output/echo/amount"}, "quote"),
    ]
    async with bank_env(db_url, sink) as env:
        over = await env.start(steps)
        run = await env.wait_status(over, {"failed", "succeeded"})
        stop = next(e for e in await env.events(over) if e["type"] == "run.meter_exceeded")
        text = await env.start(bogus)
        unmetered = await env.wait_status(text, {"failed", "succeeded"})
        why = next(e for e in await env.events(text) if e["type"] == "run.meter_exceeded")
    assert run["status"] == "failed"
    assert stop["payload"]["scope"] == "run"
    assert stop["payload"]["amount"] == "20000"
    assert unmetered["status"] == "failed"
    assert why["payload"]["scope"] == "value"
    assert sink.stats()["requests"] == 0


async def test_the_tenant_cap_spans_runs_and_holds_under_concurrency(
    db_url: str, sink: RecordingServer
) -> None:
    # tenant_daily_limit 12000: eight transfers of 1500 fit, whatever the runs and workers
    async with bank_env(db_url, sink, workers=2) as env:
        runs = [await env.start(chain(3, prefix=f"r{n}-")) for n in range(5)]  # 15 x 1500
        ended = [await env.wait_status(r, {"failed", "succeeded"}, timeout_s=30) for r in runs]
        stops = [
            e["payload"]
            for r in runs
            for e in await env.events(r)
            if e["type"] == "run.meter_exceeded"
        ]
        other = await env.start(chain(1), tenant="globex")
        theirs = await env.wait_status(other, {"failed", "succeeded"}, tenant="globex")
    transfers_made = [k for k in called(sink) if not k.startswith("refund") and k != "t0"]
    assert len(transfers_made) == 8, called(sink)
    # which runs finish depends on how the two workers interleave; that 15 - 8 never start does not
    assert sum(3 for r in ended if r["status"] == "succeeded") <= 8
    assert sum(1 for r in ended if r["status"] == "failed") == len(stops) >= 3
    assert {s["scope"] for s in stops} == {"tenant"}
    assert all(float(s["total"]) + float(s["amount"]) > 12_000 for s in stops)
    assert theirs["status"] == "succeeded"  # another tenant's day is its own


async def test_retries_of_one_call_are_counted_once(db_url: str, sink: RecordingServer) -> None:
    retry = {"max_attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.1}
    steps = chain(6)  # 9000: each retried attempt of one call must not add again
    steps[0] = {**steps[0], "retry": retry, "on_failure": "retry"}
    async with bank_env(db_url, sink) as env:
        sink.fail("t0", times=2, status=503)
        run_id = await env.start(steps)
        run = await env.wait_status(run_id, {"failed", "succeeded"})
    assert run["status"] == "succeeded", run
    assert sink.stats()["failed"] == 2
    assert len(called(sink)) == 6


async def test_dry_runs_and_replays_call_nothing_and_are_not_counted(
    db_url: str, sink: RecordingServer
) -> None:
    async with bank_env(db_url, sink) as env:
        dry = await env.start(chain(10), mode="dry_run")
        assert (await env.wait_status(dry, {"failed", "succeeded"}))["status"] == "succeeded"
        real = await env.start(chain(6))
        assert (await env.wait_status(real, {"failed", "succeeded"}))["status"] == "succeeded"
    assert len(called(sink)) == 6
    await asyncio.sleep(0)
