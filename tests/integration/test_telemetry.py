"""One trace per intent across planner and executor; metrics on /metrics; trace ids in logs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from executor_service.app import create_app as create_executor_app
from executor_service.settings import ExecutorSettings
from executor_service.tools.noop import NoopTool
from executor_service.tools.registry import ToolRegistry
from planexec.logging import configure_logging
from planexec.telemetry import (
    TRACER,
    context_from_traceparent,
    current_traceparent,
    setup_telemetry,
)
from planner_service.app import create_app as create_planner_app
from planner_service.settings import PlannerSettings

from ..conftest import Keys
from .engine_env import engine_env

SIGNING_KEY = "k" * 40


def _memory(settings: PlannerSettings) -> InMemorySpanExporter:
    exporter = setup_telemetry("planexec-test", settings).memory_exporter
    assert exporter is not None
    return exporter


@pytest.fixture
def registry_catalog_file(tmp_path: Path) -> Path:
    """The engine registry's catalog (just ``noop``), for the planner: catalog versions match."""
    path = tmp_path / "noop_catalog.json"
    path.write_text(ToolRegistry([NoopTool()]).catalog.model_dump_json(), encoding="utf-8")
    return path


@pytest.fixture
async def traced_planner(
    db_url: str, registry_catalog_file: Path
) -> AsyncIterator[tuple[FastAPI, httpx2.AsyncClient]]:
    settings = PlannerSettings(
        database_url=db_url,
        env="test",
        signing_key=SIGNING_KEY,
        catalog_file=registry_catalog_file,
        otel_exporter="memory",
        _env_file=None,
    )
    app = create_planner_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://planner") as c:
                yield app, c
    finally:
        _memory(settings).clear()


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def _span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def _parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def _attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def _scrape(app: FastAPI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of GET /metrics: (sample name, sorted labels) -> value."""
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


async def test_planner_and_executor_spans_of_one_intent_share_one_trace(
    traced_planner: tuple[FastAPI, httpx2.AsyncClient], keys: Keys, db_url: str
) -> None:
    planner_app, planner = traced_planner
    executor_app = create_executor_app(
        ExecutorSettings(database_url=db_url, env="test", signing_key=SIGNING_KEY, _env_file=None)
    )
    exporter = _memory(planner_app.state.settings)
    exporter.clear()
    before_planner = await _scrape(planner_app)
    before_executor = await _scrape(executor_app)

    response = await planner.post(
        "/v1/plans",
        json={
            "intent": "echo twice",
            "draft": {
                "steps": [
                    {"id": "first", "tool": "noop", "args": {"value": 1}},
                    {"id": "second", "tool": "noop", "args": {"value": 2}, "depends_on": ["first"]},
                ]
            },
            "options": {"execute": True},
        },
        headers={"X-API-Key": keys.acme_submitter},
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "ready", response.text
    stored = await planner_app.state.plan_store.get_version(
        "acme", uuid.UUID(response.json()["plan_id"])
    )
    assert stored is not None
    plan = stored.plan
    assert plan.traceparent is not None

    async with engine_env(db_url, [NoopTool()]) as env:
        run_id, created = await env.store.create_run(
            plan, stored.policy_decisions, created_by="acme-user"
        )
        assert created
        run = await env.wait_status(run_id, {"succeeded", "failed"})
        assert run["status"] == "succeeded", run
        events = await env.events(run_id)

    spans = exporter.get_finished_spans()
    [create] = _by_name(spans, "plan.create")
    [execute] = _by_name(spans, "run.execute")
    attempts = _by_name(spans, "step.attempt")
    trace_id = _trace_id(create)
    # One trace: the plan records plan.create's context and the run continues it.
    assert plan.traceparent.split("-")[1:3] == [trace_id, _span_id(create)]
    assert _parent_id(execute) == _span_id(create)
    assert {_trace_id(s) for s in [create, execute, *attempts]} == {trace_id}
    for name in ("plan.generate", "plan.validate", "policy.evaluate"):
        [span] = _by_name(spans, name)
        assert _trace_id(span) == trace_id and _parent_id(span) == _span_id(create)
    [generate] = _by_name(spans, "plan.generate")
    assert _attrs(generate)["gen_ai.operation.name"] == "plan_draft"
    assert _attrs(generate)["gen_ai.provider.name"] == "planexec"
    # The HTTP request span of the FastAPI instrumentation is the root of the trace.
    assert any(s.parent is None and _trace_id(s) == trace_id for s in spans)

    assert sorted(str(_attrs(s)["planexec.step.id"]) for s in attempts) == ["first", "second"]
    for span in attempts:
        assert _attrs(span)["gen_ai.operation.name"] == "execute_tool"
        assert _attrs(span)["gen_ai.tool.name"] == "noop"
        assert _attrs(span)["planexec.attempt"] == 1
        assert _parent_id(span) == _span_id(execute)
    # Events the driver wrote carry the trace id (run.created and run.leased come from the
    # store's create and claim statements).
    driven = [e for e in events if e["type"] not in {"run.created", "run.leased"}]
    assert {e["type"] for e in driven} >= {"step.started", "step.succeeded", "run.succeeded"}
    assert driven and {e["trace_id"] for e in driven} == {trace_id}

    after_planner = await _scrape(planner_app)
    after_executor = await _scrape(executor_app)
    ready = {"planexec_plan_status": "ready"}
    assert _value(after_planner, "planexec_plans_total", **ready) == (
        _value(before_planner, "planexec_plans_total", **ready) + 1
    )
    assert _value(after_planner, "planexec_plan_steps_sum") == (
        _value(before_planner, "planexec_plan_steps_sum") + 2
    )
    noop = {"gen_ai_tool_name": "noop"}
    assert _value(after_executor, "planexec_step_duration_seconds_count", **noop) == (
        _value(before_executor, "planexec_step_duration_seconds_count", **noop) + 2
    )
    assert _value(after_executor, "planexec_run_time_to_first_execution_seconds_count") >= 1


async def test_policy_denial_and_rejected_plan_are_counted(
    traced_planner: tuple[FastAPI, httpx2.AsyncClient], keys: Keys
) -> None:
    planner_app, planner = traced_planner
    before = await _scrape(planner_app)
    # http.request needs a scope the submitter's key lacks (defaults.cedar): the step is denied.
    step = {
        "id": "a",
        "tool": "http.request",
        "args": {"method": "GET", "url": "https://example.com/"},
    }
    response = await planner.post(
        "/v1/plans",
        json={"intent": "fetch", "draft": {"steps": [step]}},
        headers={"X-API-Key": keys.acme_submitter},
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "rejected"
    after = await _scrape(planner_app)
    rejected = {"planexec_plan_status": "rejected"}
    assert _value(after, "planexec_plans_total", **rejected) == (
        _value(before, "planexec_plans_total", **rejected) + 1
    )
    http = {"gen_ai_tool_name": "http.request"}
    assert _value(after, "planexec_policy_denials_total", **http) == (
        _value(before, "planexec_policy_denials_total", **http) + 1
    )


def test_log_line_inside_a_span_carries_its_trace_and_span_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = PlannerSettings(env="dev", otel_exporter="memory", _env_file=None)
    setup_telemetry("planexec-test", settings)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info", json=True)
        log = structlog.get_logger("planexec.test")
        with TRACER.start_as_current_span("logged") as span:
            log.info("inside", n=1)
            traceparent = current_traceparent()
        log.info("outside")
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    inside = next(line for line in lines if line["event"] == "inside")
    outside = next(line for line in lines if line["event"] == "outside")
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert traceparent is not None
    assert traceparent.startswith(f"00-{inside['trace_id']}-{inside['span_id']}-")
    assert "trace_id" not in outside


def test_injection_keeps_a_callers_traceparent_of_another_trace_only() -> None:
    setup_telemetry("planexec-test", PlannerSettings(env="dev", _env_file=None))
    with TRACER.start_as_current_span("plan") as plan_span:
        plan_traceparent = current_traceparent()
    assert plan_traceparent is not None
    # Outside the plan's trace (a new root span): the caller's header stays.
    with TRACER.start_as_current_span("elsewhere"):
        headers = {"traceparent": plan_traceparent}
        propagate.inject(headers)
    assert headers["traceparent"] == plan_traceparent
    # Inside the plan's trace: the current, more precise span is propagated.
    parent = context_from_traceparent(plan_traceparent)
    with TRACER.start_as_current_span("step", context=parent) as step:
        headers = {"traceparent": plan_traceparent}
        propagate.inject(headers)
    plan_trace = f"{plan_span.get_span_context().trace_id:032x}"
    assert headers["traceparent"].split("-")[1:3] == [
        plan_trace,
        f"{step.get_span_context().span_id:016x}",
    ]
