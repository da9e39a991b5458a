"""The small built-in tools: specs equal the demo catalog's, and each call does what it says."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import jsonschema
import openai
import pytest

from executor_service.tools.base import InvocationContext, ToolError
from executor_service.tools.llm_complete import (
    LLM_COMPLETE_SPEC,
    LlmCompleteTool,
    parse_retry_after,
    tool_error_from_openai,
)
from executor_service.tools.noop import NOOP_SPEC, NoopTool
from executor_service.tools.transform import TRANSFORM_SPEC, TransformTool, compile_expression
from executor_service.tools.wait import WAIT_SPEC, WaitTool, wait_deadline
from shared_schemas import SideEffect
from tests.support.demo_catalog import demo_tools

DEMO = {tool.name: tool for tool in demo_tools()}


def ctx(first_started_at: datetime | None = None) -> InvocationContext:
    return InvocationContext(
        run_id=uuid.uuid4(),
        step_id="s1",
        attempt=1,
        idempotency_key="key-1",
        timeout_s=30.0,
        tenant="acme",
        first_started_at=first_started_at,
    )


# --- specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "name"),
    [(TRANSFORM_SPEC, "transform"), (WAIT_SPEC, "wait"), (LLM_COMPLETE_SPEC, "llm.complete")],
)
def test_adapter_spec_equals_the_demo_catalog_entry(spec: Any, name: str) -> None:
    assert spec == DEMO[name]
    assert spec.model_dump() == DEMO[name].model_dump()


def test_adapters_expose_their_spec() -> None:
    assert TransformTool().spec is TRANSFORM_SPEC
    assert WaitTool().spec is WAIT_SPEC
    assert NoopTool().spec is NOOP_SPEC
    assert TRANSFORM_SPEC.side_effect is SideEffect.READ and TRANSFORM_SPEC.idempotent
    assert WAIT_SPEC.side_effect is SideEffect.READ and WAIT_SPEC.idempotent
    assert not LLM_COMPLETE_SPEC.idempotent


# --- noop ----------------------------------------------------------------------------------


async def test_noop_echoes_value_and_matches_its_output_schema() -> None:
    assert "noop" not in DEMO
    assert NOOP_SPEC.side_effect is SideEffect.READ and NOOP_SPEC.idempotent
    result = await NoopTool().invoke({"value": [1, "a"]}, ctx())
    assert result.output == {"ok": True, "echo": [1, "a"]}
    assert (await NoopTool().invoke({}, ctx())).output == {"ok": True, "echo": None}
    jsonschema.validate(result.output, NOOP_SPEC.output_schema)
    jsonschema.validate({"value": 3}, NOOP_SPEC.input_schema)


# --- transform -----------------------------------------------------------------------------

DATA = {"people": [{"name": "ada", "age": 36}, {"name": "alan", "age": 41}], "n": None}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("people[?age > `40`].name", ["alan"]),
        ("people[*].name | sort(@)", ["ada", "alan"]),
        ("length(people)", 2),
        ("{first: people[0].name, total: sum(people[*].age)}", {"first": "ada", "total": 77}),
        ("missing.path", None),
    ],
)
async def test_transform_evaluates_jmespath(expression: str, expected: Any) -> None:
    result = await TransformTool().invoke({"data": DATA, "expression": expression}, ctx())
    assert result.output == expected
    assert result.cost_usd == 0.0


@pytest.mark.parametrize("expression", ["people[", "foo..bar", "sort(@", "a ||", ""])
async def test_transform_refuses_a_bad_expression_without_retry(expression: str) -> None:
    with pytest.raises(ToolError) as info:
        await TransformTool().invoke({"data": DATA, "expression": expression}, ctx())
    assert info.value.code == "bad_expression"
    assert info.value.retryable is False


async def test_transform_reports_an_evaluation_error_as_bad_expression() -> None:
    with pytest.raises(ToolError) as info:
        await TransformTool().invoke({"data": "text", "expression": "abs(@)"}, ctx())
    assert (info.value.code, info.value.retryable) == ("bad_expression", False)


def test_transform_compiles_each_expression_once() -> None:
    expression = f"people[?name == '{uuid.uuid4().hex}']"
    hits = compile_expression.cache_info().hits
    first = compile_expression(expression)
    assert compile_expression(expression) is first
    assert compile_expression.cache_info().hits == hits + 1


# --- wait ----------------------------------------------------------------------------------


def test_wait_deadline_counts_from_the_first_attempt() -> None:
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    first = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert wait_deadline(30, first, now) == first + timedelta(seconds=30)
    assert wait_deadline(30, None, now) == now + timedelta(seconds=30)
    naive = datetime(2026, 1, 1, 12, 0, 0)
    assert wait_deadline(5, naive, now) == first + timedelta(seconds=5)


async def test_wait_resumed_waits_only_what_is_left() -> None:
    first = datetime.now(UTC) - timedelta(seconds=0.6)
    started = time.monotonic()
    result = await WaitTool().invoke({"seconds": 0.8}, ctx(first_started_at=first))
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 0.5
    assert result.output["waited_s"] == pytest.approx(elapsed, abs=0.05)
    assert datetime.fromisoformat(result.output["until"]) == first + timedelta(seconds=0.8)


async def test_wait_without_a_first_start_waits_the_full_time() -> None:
    before = datetime.now(UTC)
    started = time.monotonic()
    result = await WaitTool().invoke({"seconds": 0.3}, ctx())
    assert time.monotonic() - started >= 0.29
    until = datetime.fromisoformat(result.output["until"])
    assert before + timedelta(seconds=0.3) <= until <= datetime.now(UTC)


async def test_wait_past_its_deadline_returns_at_once() -> None:
    first = datetime.now(UTC) - timedelta(hours=1)
    started = time.monotonic()
    result = await WaitTool().invoke({"seconds": 60}, ctx(first_started_at=first))
    assert time.monotonic() - started < 0.1
    assert result.output["waited_s"] == 0


async def test_wait_is_never_longer_than_asked_when_the_database_clock_is_ahead() -> None:
    first = datetime.now(UTC) + timedelta(minutes=5)
    started = time.monotonic()
    await WaitTool().invoke({"seconds": 0.2}, ctx(first_started_at=first))
    assert time.monotonic() - started < 0.5


async def test_wait_stops_at_once_when_cancelled() -> None:
    task = asyncio.create_task(WaitTool().invoke({"seconds": 60}, ctx()))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.1


@pytest.mark.parametrize("seconds", [-1, 3601, "5", None, True, float("nan")])
async def test_wait_refuses_bad_seconds(seconds: Any) -> None:
    with pytest.raises(ToolError) as info:
        await WaitTool().invoke({"seconds": seconds}, ctx())
    assert (info.value.code, info.value.retryable) == ("bad_args", False)


# --- llm.complete: pure parts (the HTTP path is in tests/integration) -----------------------


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 120 ", now=now) == 120.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90
    assert parse_retry_after(earlier, now=now) == 0
    for value in (None, "", "soon", "1.5", "-3", "inf"):
        assert parse_retry_after(value, now=now) is None


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://llm.test/v1/chat/completions")
    response = httpx2.Response(status, headers=headers, request=request)
    error_class = {400: openai.BadRequestError, 429: openai.RateLimitError}.get(
        status, openai.APIStatusError
    )
    return error_class("scripted", response=response, body=None)


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "code", "retry_after"),
    [
        (429, {"Retry-After": "3"}, True, "llm_rate_limited", 3.0),
        (503, {"Retry-After": "12"}, True, "llm_server_error", 12.0),
        (500, None, True, "llm_server_error", None),
        (408, None, True, "llm_server_error", None),
        (400, None, False, "llm_rejected", None),
        (401, None, False, "llm_rejected", None),
        (404, {"Retry-After": "3"}, False, "llm_rejected", 3.0),
    ],
)
def test_openai_status_errors_map_to_retryable_tool_errors(
    status: int, headers: dict[str, str] | None, retryable: bool, code: str, retry_after: Any
) -> None:
    error = tool_error_from_openai(_status_error(status, headers))
    assert (error.retryable, error.code, error.retry_after_s) == (retryable, code, retry_after)
    assert error.details == {"status": status}


def test_openai_connection_errors_are_retryable() -> None:
    request = httpx2.Request("POST", "http://llm.test/v1/chat/completions")
    timeout = tool_error_from_openai(openai.APITimeoutError(request=request))
    assert (timeout.retryable, timeout.code) == (True, "llm_timeout")
    refused = tool_error_from_openai(openai.APIConnectionError(request=request))
    assert (refused.retryable, refused.code) == (True, "llm_unavailable")


def test_llm_cost_comes_from_tokens_and_prices() -> None:
    tool = LlmCompleteTool(
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        model="m",
        price_per_1k_input_usd=0.5,
        price_per_1k_output_usd=2.0,
    )
    assert tool.cost_usd(1000, 0) == pytest.approx(0.5)
    assert tool.cost_usd(200, 300) == pytest.approx(0.1 + 0.6)
    assert tool.cost_usd(0, 0) == 0


def test_output_verification_never_fetches_a_remote_ref() -> None:
    """A tool's output schema naming a remote ``$ref`` is refused, never fetched (S7/S10)."""
    import socket

    from executor_service.domain.verify import verify_output

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        schema = {"type": "object", "properties": {"x": {"$ref": f"http://127.0.0.1:{port}/s"}}}
        failure = verify_output({"x": 1}, schema, None)
        assert failure is not None and "cannot be resolved" in failure.message
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
