"""``llm.complete`` over real HTTP on loopback, against the scripted OpenAI-compatible server."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import jsonschema
import pytest

from executor_service.tools.base import InvocationContext, ToolError
from executor_service.tools.llm_complete import LLM_COMPLETE_SPEC, LlmCompleteTool
from tests.support.scripted_llm import ScriptedCompletion, ScriptedError, ScriptedLLM

MODEL = "tool-test-model"
SEED = 77
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CTX = InvocationContext(
    run_id=uuid.uuid4(),
    step_id="summarise",
    attempt=1,
    idempotency_key="run-1:summarise",
    timeout_s=10.0,
    tenant="acme",
    traceparent=TRACEPARENT,
)


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
async def tool(llm: ScriptedLLM) -> AsyncIterator[LlmCompleteTool]:
    tool = LlmCompleteTool(
        base_url=llm.base_url,
        api_key="sk-test",
        model=MODEL,
        timeout_s=5,
        seed=SEED,
        price_per_1k_input_usd=0.5,
        price_per_1k_output_usd=1.5,
    )
    try:
        yield tool
    finally:
        await tool.aclose()


async def test_completion_returns_text_tokens_and_cost(
    llm: ScriptedLLM, tool: LlmCompleteTool
) -> None:
    llm.script([ScriptedCompletion("Paris.", prompt_tokens=1000, completion_tokens=500)])
    result = await tool.invoke(
        {"prompt": "Capital of France?", "system": "Answer briefly.", "max_tokens": 16}, CTX
    )
    assert result.output == {
        "text": "Paris.",
        "model": MODEL,
        "input_tokens": 1000,
        "output_tokens": 500,
    }
    jsonschema.validate(result.output, LLM_COMPLETE_SPEC.output_schema)
    assert result.cost_usd == pytest.approx(0.5 + 0.75)
    assert result.usage == {
        "input_tokens": 1000,
        "output_tokens": 500,
        "total_tokens": 1500,
        "finish_reason": "stop",
    }
    [sent] = llm.requests
    assert sent["model"] == MODEL
    assert sent["temperature"] == 0
    assert sent["seed"] == SEED
    assert sent["max_tokens"] == 16
    assert sent["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
    ]
    headers = llm.headers[0]
    assert headers["idempotency-key"] == "run-1:summarise"
    assert headers["traceparent"] == TRACEPARENT
    assert headers["authorization"] == "Bearer sk-test"


async def test_prompt_alone_sends_one_user_message(llm: ScriptedLLM, tool: LlmCompleteTool) -> None:
    llm.script(["hi"])
    result = await tool.invoke({"prompt": "Say hi"}, CTX)
    assert result.output["text"] == "hi"
    assert llm.requests[0]["messages"] == [{"role": "user", "content": "Say hi"}]
    assert "max_tokens" not in llm.requests[0]
    assert result.output["input_tokens"] > 0
    assert result.cost_usd > 0


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [
        (500, True, "llm_server_error"),
        (503, True, "llm_server_error"),
        (429, True, "llm_rate_limited"),
        (400, False, "llm_rejected"),
        (401, False, "llm_rejected"),
    ],
)
async def test_http_errors_are_mapped_and_not_retried_by_the_client(
    llm: ScriptedLLM, tool: LlmCompleteTool, status: int, retryable: bool, code: str
) -> None:
    llm.script([ScriptedError(status), "too late"])
    with pytest.raises(ToolError) as info:
        await tool.invoke({"prompt": "x"}, CTX)
    assert (info.value.retryable, info.value.code) == (retryable, code)
    assert info.value.details["status"] == status
    assert info.value.retry_after_s is None  # the scripted server sends no Retry-After
    assert len(llm.requests) == 1  # retries belong to the engine, not to the openai client


async def test_a_refusal_is_not_retryable(llm: ScriptedLLM, tool: LlmCompleteTool) -> None:
    llm.script([ScriptedCompletion(None, refusal="I cannot help with that.")])
    with pytest.raises(ToolError) as info:
        await tool.invoke({"prompt": "x"}, CTX)
    assert (info.value.retryable, info.value.code) == (False, "llm_no_content")
    assert "I cannot help with that." in info.value.message


async def test_an_unreachable_server_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    tool = LlmCompleteTool(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", model=MODEL)
    try:
        with pytest.raises(ToolError) as info:
            await tool.invoke({"prompt": "x"}, CTX)
    finally:
        await tool.aclose()
    assert (info.value.retryable, info.value.code) == (True, "llm_unavailable")


async def test_an_empty_prompt_is_refused_before_any_request(
    llm: ScriptedLLM, tool: LlmCompleteTool
) -> None:
    llm.script(["unused"])
    with pytest.raises(ToolError) as info:
        await tool.invoke({"prompt": ""}, CTX)
    assert (info.value.retryable, info.value.code) == (False, "bad_args")
    assert llm.requests == []
