"""One attempt of one step: call the adapter under a timeout and verify what it returns."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

import structlog
from opentelemetry.trace import StatusCode

from planexec.telemetry import METRICS, TRACER
from shared_schemas import Step

from ..domain.transitions import Failed, Failure, Succeeded
from ..domain.verify import verify_output
from ..tools.base import InvocationContext, ToolAdapter, ToolError, ToolResult

_log = structlog.get_logger("planexec.executor.attempt")


@dataclass(frozen=True)
class AttemptResult:
    """What an attempt produced, for the driver to commit."""

    step_id: str
    outcome: Succeeded | Failed
    duration_s: float
    cost_usd: float = 0.0
    """What the call cost in USD as the tool reported it (0 when it reports nothing)."""


class HeartbeatTimeoutError(Exception):
    """The tool stopped heartbeating (Temporal's activity heartbeat timeout)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no heartbeat for {timeout_s} s")
        self.timeout_s = timeout_s


class _Heartbeats:
    """The last heartbeat of an attempt: when (monotonic seconds) and its details."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.details: Any = None
        self.count = 0

    def beat(self, details: Any) -> None:
        self.at = time.monotonic()
        self.details = details
        self.count += 1


async def _watched(
    call: Coroutine[Any, Any, ToolResult], beats: _Heartbeats, timeout_s: float
) -> ToolResult:
    """Await ``call``, cancelling it once ``timeout_s`` pass without a heartbeat."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            left = beats.at + timeout_s - time.monotonic()
            if left <= 0:
                task.cancel()
                raise HeartbeatTimeoutError(timeout_s)
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()


async def run_attempt(
    step: Step,
    tool: ToolAdapter,
    args: dict[str, Any],
    ctx: InvocationContext,
    *,
    max_output_bytes: int,
) -> AttemptResult:
    """Call ``tool`` once; never raises except ``asyncio.CancelledError``.

    The timeout is enforced with asyncio cancellation (``asyncio.timeout``); a timed-out
    attempt is retryable. Output is checked against the tool's ``output_schema``, the step's
    ``success_criteria`` and ``max_output_bytes`` (compact JSON). Runs in a ``step.attempt``
    span (OTel GenAI ``execute_tool``) and records ``planexec.step.duration`` / ``.failures``.
    """
    tool_attr = {"gen_ai.tool.name": step.tool}
    with TRACER.start_as_current_span(
        "step.attempt",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": step.tool,
            "planexec.step.id": step.id,
            "planexec.attempt": ctx.attempt,
        },
    ) as span:
        result = await _attempt(step, tool, args, ctx, max_output_bytes=max_output_bytes)
        METRICS.step_duration.record(result.duration_s, tool_attr)
        if isinstance(result.outcome, Failed):
            code = result.outcome.failure.code
            span.set_status(StatusCode.ERROR, code)
            span.set_attribute("error.type", code)
            METRICS.step_failures.add(1, {**tool_attr, "error.type": code})
        return result


async def _attempt(
    step: Step,
    tool: ToolAdapter,
    args: dict[str, Any],
    ctx: InvocationContext,
    *,
    max_output_bytes: int,
) -> AttemptResult:
    started = time.perf_counter()
    attempt = ctx.attempt
    beats = _Heartbeats()
    if step.heartbeat_timeout_s is not None:
        ctx = replace(ctx, heartbeat=beats.beat)
    try:
        async with asyncio.timeout(ctx.timeout_s):
            if step.heartbeat_timeout_s is None:
                result = await tool.invoke(args, ctx)
            else:
                result = await _watched(tool.invoke(args, ctx), beats, step.heartbeat_timeout_s)
    except TimeoutError:
        failure = Failure("timeout", f"no answer within {ctx.timeout_s:g} s", retryable=True)
        return AttemptResult(step.id, Failed(attempt, failure), time.perf_counter() - started)
    except HeartbeatTimeoutError as exc:
        failure = Failure(
            "heartbeat_timeout",
            f"no heartbeat for {exc.timeout_s:g} s",
            retryable=True,
            details={"heartbeat": beats.details, "heartbeats": beats.count},
        )
        return AttemptResult(step.id, Failed(attempt, failure), time.perf_counter() - started)
    except ToolError as exc:
        failure = Failure(exc.code, exc.message, exc.retryable, exc.retry_after_s)
        return AttemptResult(step.id, Failed(attempt, failure), time.perf_counter() - started)
    except Exception as exc:  # an adapter bug must fail the step, not the worker
        _log.exception("adapter_crashed", tool=step.tool, step_id=step.id)
        failure = Failure("adapter_error", f"{type(exc).__name__}: {exc}", retryable=False)
        return AttemptResult(step.id, Failed(attempt, failure), time.perf_counter() - started)
    duration = time.perf_counter() - started
    try:
        # Compact JSON, as stored; NaN and infinities are refused (jsonb cannot hold them).
        size = len(json.dumps(result.output, separators=(",", ":"), allow_nan=False))
    except (ValueError, TypeError) as exc:
        failure = Failure("output_invalid", f"output is not JSON: {exc}", retryable=False)
        return AttemptResult(step.id, Failed(attempt, failure), duration)
    if size > max_output_bytes:
        failure = Failure(
            "output_too_large", f"output is {size} bytes, over {max_output_bytes}", False
        )
        return AttemptResult(step.id, Failed(attempt, failure), duration)
    problem = verify_output(result.output, tool.spec.output_schema, step.success_criteria)
    if problem is not None:
        return AttemptResult(step.id, Failed(attempt, problem), duration)
    return AttemptResult(step.id, Succeeded(attempt, result.output), duration, result.cost_usd)
