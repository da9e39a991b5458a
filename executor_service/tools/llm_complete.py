"""The ``llm.complete`` built-in: one chat completion with the configured model (DESIGN §3, §10).

It calls any OpenAI-compatible ``/chat/completions`` endpoint with the official ``openai``
client over ``httpx2``, at temperature 0 with a fixed seed (best-effort determinism). The
client does not retry (``max_retries=0``): the engine owns retries, with backoff and the
server's ``Retry-After``. Not idempotent: a repeated call may answer differently and is billed
again.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from shared_schemas import ToolSpec

from .base import InvocationContext, ToolError, ToolResult
from .http_errors import parse_retry_after

__all__ = ["LLM_COMPLETE_SPEC", "LlmCompleteTool", "parse_retry_after", "tool_error_from_openai"]

LLM_COMPLETE_SPEC = ToolSpec(
    name="llm.complete",
    description="Completes a prompt with the configured language model.",
    input_schema={
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "system": {"type": "string"},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 8192},
        },
        "required": ["prompt"],
    },
    output_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
    idempotent=False,
    default_timeout_s=60.0,
    cost_usd=0.01,
)
"""Catalog entry of ``llm.complete``: args ``{prompt, system?, max_tokens?}``; output
``{text, model, input_tokens, output_tokens}``; ``cost_usd`` is the planning estimate."""

_MESSAGE_LIMIT = 300


def tool_error_from_openai(exc: openai.APIError) -> ToolError:
    """Map an ``openai`` error to a ``ToolError`` (retry rules of DESIGN §6).

    Timeouts and connection errors, HTTP 408, 409, 429 and 5xx are retryable, with
    ``retry_after_s`` from the response's ``Retry-After`` (read by ``parse_retry_after``, the
    same rules as the HTTP tools); other 4xx and undecodable responses are not. Codes:
    ``llm_timeout``, ``llm_unavailable``, ``llm_rate_limited``, ``llm_server_error``,
    ``llm_rejected``, ``llm_bad_response``.
    """
    if isinstance(exc, openai.APITimeoutError):
        return ToolError(
            "the model server did not answer in time", retryable=True, code="llm_timeout"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ToolError(
            f"cannot connect to the model server: {cause}", retryable=True, code="llm_unavailable"
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in (408, 409, 429) or status >= 500
        if status == 429:
            code = "llm_rate_limited"
        elif retryable:
            code = "llm_server_error"
        else:
            code = "llm_rejected"
        return ToolError(
            f"model server answered HTTP {status}: {exc.message}"[:_MESSAGE_LIMIT],
            retryable=retryable,
            code=code,
            retry_after_s=parse_retry_after(exc.response.headers.get("retry-after")),
            details={"status": status},
        )
    return ToolError(
        f"model server error: {exc}"[:_MESSAGE_LIMIT], retryable=False, code="llm_bad_response"
    )


class LlmCompleteTool:
    """Completes ``args["prompt"]`` (with an optional ``system`` message) with one model.

    Args:
        base_url: API base URL, e.g. ``https://api.openai.com/v1``.
        api_key: bearer key sent to the server.
        model: model name.
        timeout_s: longest HTTP request, in seconds (the attempt's own timeout applies too).
        seed: sampling seed, sent with temperature 0.
        price_per_1k_input_usd: USD per 1,000 input (prompt) tokens.
        price_per_1k_output_usd: USD per 1,000 output (completion) tokens.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float = 60.0,
        seed: int = 0,
        price_per_1k_input_usd: float = 0.0,
        price_per_1k_output_usd: float = 0.0,
    ) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.seed = seed
        self.price_per_1k_input_usd = price_per_1k_input_usd
        self.price_per_1k_output_usd = price_per_1k_output_usd
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            http_client=httpx2.AsyncClient(timeout=timeout_s),
            max_retries=0,
        )

    @property
    def spec(self) -> ToolSpec:
        """The ``llm.complete`` catalog entry, ``LLM_COMPLETE_SPEC``."""
        return LLM_COMPLETE_SPEC

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """USD cost of a call from its token usage and the configured prices."""
        return (
            input_tokens * self.price_per_1k_input_usd
            + output_tokens * self.price_per_1k_output_usd
        ) / 1000

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Ask the model once.

        The request carries ``Idempotency-Key`` (and ``traceparent`` when set) from ``ctx``.

        Returns:
            ``output`` ``{text, model, input_tokens, output_tokens}``; ``cost_usd`` from the
            usage and prices; ``usage`` ``{input_tokens, output_tokens, total_tokens,
            finish_reason}``.

        Raises:
            ToolError: see ``tool_error_from_openai``; ``bad_args`` when ``prompt`` is not a
                non-empty string; ``llm_no_content`` (not retryable) when the model refuses or
                returns no text.
        """
        prompt = args.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ToolError("'prompt' must be a non-empty string", retryable=False, code="bad_args")
        messages: list[dict[str, str]] = []
        if isinstance(args.get("system"), str):
            messages.append({"role": "system", "content": args["system"]})
        messages.append({"role": "user", "content": prompt})
        extra: dict[str, Any] = {}
        if args.get("max_tokens") is not None:
            extra["max_tokens"] = args["max_tokens"]
        headers = {"Idempotency-Key": ctx.idempotency_key}
        if ctx.traceparent:
            headers["traceparent"] = ctx.traceparent
        try:
            completion = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=0,
                seed=self.seed,
                extra_headers=headers,
                timeout=min(self.timeout_s, ctx.timeout_s),
                **extra,
            )
        except openai.APIError as exc:
            raise tool_error_from_openai(exc) from exc
        choice = completion.choices[0] if completion.choices else None
        text = choice.message.content if choice is not None else None
        if choice is None or text is None:
            refusal = choice.message.refusal if choice is not None else None
            why = f"the model refused: {refusal}" if refusal else "the model returned no text"
            raise ToolError(why[:_MESSAGE_LIMIT], retryable=False, code="llm_no_content")
        usage = completion.usage
        input_tokens = usage.prompt_tokens if usage is not None else 0
        output_tokens = usage.completion_tokens if usage is not None else 0
        model = completion.model or self.model
        return ToolResult(
            output={
                "text": text,
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            },
            cost_usd=self.cost_usd(input_tokens, output_tokens),
            usage={
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
                "finish_reason": choice.finish_reason,
            },
        )
