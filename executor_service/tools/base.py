"""The ``ToolAdapter`` port: how the executor calls a tool, and what a call returns.

An adapter is given resolved arguments (every ``$ref`` already replaced) and an
``InvocationContext``; it returns a ``ToolResult`` or raises ``ToolError``. Timeouts are
enforced by the engine (asyncio cancellation), so an adapter must be cancellation-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from shared_schemas import ToolSpec


@dataclass(frozen=True)
class InvocationContext:
    """Facts about the call an adapter may use."""

    run_id: UUID
    """The run the step belongs to."""
    step_id: str
    """The step being executed."""
    attempt: int
    """Attempt number, 1 for the first."""
    idempotency_key: str
    """Key that identifies this logical call across attempts and crashes; adapters send it to
    the tool (HTTP ``Idempotency-Key`` header, draft-ietf-httpapi-idempotency-key-header)."""
    timeout_s: float
    """Time the engine allows this attempt, in seconds."""
    tenant: str
    """Tenant that owns the run."""
    first_started_at: datetime | None = None
    """When the step's first attempt started (database clock, UTC); durable timers count
    from it so that a resumed ``wait`` only waits for what is left."""
    traceparent: str | None = None
    """W3C Trace Context of the step's span, to propagate to the tool."""
    heartbeat: Callable[[Any], None] = field(default=lambda details: None)
    """Report progress (``details``: any JSON value); a step with ``heartbeat_timeout_s``
    fails with ``heartbeat_timeout`` when an attempt stops calling it."""
    heartbeat_details: Any = None
    """The last details the previous attempt of this step reported, for resuming its work."""


@dataclass(frozen=True)
class ToolResult:
    """A successful call."""

    output: Any
    """The tool's output, a JSON value; checked against the tool's ``output_schema``."""
    cost_usd: float = 0.0
    """What the call cost, in USD, when the tool reports it (LLM token usage)."""
    usage: dict[str, Any] = field(default_factory=dict)
    """Usage details (e.g. ``input_tokens``, ``output_tokens``, ``bytes``)."""


class ToolError(Exception):
    """A failed call.

    ``retryable`` says whether the same call may succeed later (HTTP 408/429/5xx and connection
    errors are; other 4xx and refused targets are not); ``retry_after_s`` carries a server's
    ``Retry-After`` (RFC 9110 §10.2.3) in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        code: str = "tool_error",
        retry_after_s: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code
        self.retry_after_s = retry_after_s
        self.details = details or {}


class ToolAdapter(Protocol):
    """Calls one tool."""

    @property
    def spec(self) -> ToolSpec:
        """The tool's catalog entry."""
        ...

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Call the tool with resolved ``args``.

        Raises:
            ToolError: when the call failed; ``retryable`` decides whether it is retried.
        """
        ...
