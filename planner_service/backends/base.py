"""The ``PlannerBackend`` port and the records it returns (DESIGN §4, step 2).

A backend is stateless between calls: on a repair round the pipeline passes back every earlier
attempt with the issues found, and an LLM backend rebuilds the conversation from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from shared_schemas import PlanDraft, PlannerInfo, ToolCatalog, ValidationIssue


@dataclass(frozen=True)
class PlanRequest:
    """What a backend plans from."""

    intent: str
    """The caller's intent, in words (at most 16 KiB)."""
    context: dict[str, Any]
    """Caller-supplied facts (a JSON object)."""
    catalog: ToolCatalog
    """The tools the plan may use."""
    safe_mode: bool = False
    """When true only ``read`` tools are acceptable."""
    draft: dict[str, Any] | None = None
    """Caller-supplied plan body (``PlanDraft`` JSON), for the ``draft`` backend."""


@dataclass(frozen=True)
class AttemptRecord:
    """Provenance of one generation attempt, persisted as given (after redaction)."""

    backend: str
    """Backend name: ``template``, ``openai`` or ``draft``."""
    model: str | None = None
    """Model name, for LLM backends."""
    prompt_version: str | None = None
    """Version of the prompt template used."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Prompt messages sent (role/content), for LLM backends."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Request parameters (temperature, seed, response format name, ...)."""
    raw_response: str | None = None
    """The backend's raw output text."""
    input_tokens: int | None = None
    """Prompt tokens reported by the model server."""
    output_tokens: int | None = None
    """Completion tokens reported by the model server."""
    latency_s: float = 0.0
    """Wall time of the generation call, in seconds."""
    error: str | None = None
    """Transport or server error, when the call itself failed."""


@dataclass(frozen=True)
class PriorAttempt:
    """An earlier attempt of the same request and the issues that made it fail."""

    raw_response: str | None
    """What the backend produced."""
    issues: list[ValidationIssue]
    """Parse, validation and policy issues found in it."""


@dataclass(frozen=True)
class Generation:
    """Result of one ``generate`` call."""

    attempt: AttemptRecord
    """Provenance of the call."""
    planner: PlannerInfo
    """Backend, model and template/prompt version, recorded on the plan."""
    draft: PlanDraft | None = None
    """The parsed plan body, or None when parsing failed."""
    issues: list[ValidationIssue] = field(default_factory=list)
    """Parse issues (``schema``) when ``draft`` is None."""


class BackendUnavailableError(RuntimeError):
    """The backend cannot be reached or refused the call (network error, 5xx, bad key)."""


class NoMatchingTemplateError(LookupError):
    """No plan template matches the intent."""


class PlannerBackend(Protocol):
    """Turns a ``PlanRequest`` into a ``Generation``."""

    name: str
    """Backend name as used in requests and recorded in provenance."""

    async def generate(self, request: PlanRequest, prior: list[PriorAttempt]) -> Generation:
        """Generate a plan body; ``prior`` holds earlier failed attempts (repair rounds).

        Raises:
            BackendUnavailableError: when the backend cannot produce anything at all.
            NoMatchingTemplateError: template backend only, when no template matches.

        """
        ...
