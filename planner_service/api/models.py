"""Request and response bodies of the plan routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from planexec.web.openapi import VersionNumber
from shared_schemas import Plan, PolicyDecision, Step, ValidationIssue, ValidationReport

from ..store import AttemptRow, StoredVersion

BackendName = Literal["template", "openai", "draft"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class PlanOptionsIn(_Request):
    """Pipeline options of one request."""

    max_repairs: int | None = Field(default=None, ge=0, le=10)
    """Repair rounds after a failed generation (LLM backends); null = the service default."""
    safe_mode: bool = False
    """Allow only ``read`` tools."""
    execute: bool = False
    """Queue the plan for execution once it is ``ready``."""
    budget_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    """Most the plan's tool cost estimates may add up to, in USD; null = no budget."""


class PlanCreate(_Request):
    """``POST /v1/plans``: an intent to plan, or a draft to check and version."""

    intent: str = Field(min_length=1)
    """What the caller wants done, in words (at most ``max_intent_bytes`` UTF-8 bytes)."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Facts the plan may use (a JSON object, nested at most ``max_json_depth``)."""
    backend: BackendName | None = None
    """Planner backend; default ``draft`` when a draft is given, else the service default."""
    draft: dict[str, Any] | None = None
    """Caller-supplied plan body (``steps``, ``rationale``, ...) for the ``draft`` backend."""
    options: PlanOptionsIn = Field(default_factory=PlanOptionsIn)
    """Pipeline options."""


class RevisionCreate(_Request):
    """``POST /v1/plans/{id}/revisions``: edits from a person or a failure from the executor."""

    base_version: VersionNumber | None = None
    """The version being revised; refused with 409 when it is no longer the latest."""
    draft: dict[str, Any] | None = None
    """The edited plan body (``steps``, ...); checked like a new draft."""
    failure_context: dict[str, Any] | None = None
    """What failed (step, error, outputs); the backend regenerates with it."""
    backend: BackendName | None = None
    """Backend to regenerate with; default: the one that made the plan."""
    options: PlanOptionsIn | None = None
    """Pipeline options; default: those of the base version."""


class PlanVersionPublic(BaseModel):
    """A stored plan version as returned by the API."""

    plan_id: UUID
    """Identity shared by every version of the plan."""
    version: int
    """Version number, 1 for the first."""
    parent_version: int | None
    """The version this one revises, or null."""
    status: str
    """``ready`` or ``rejected`` (a rejected plan is stored with why)."""
    content_hash: str
    """``sha256:`` digest of the RFC 8785 canonical plan body."""
    signature: str
    """``hmac-sha256:`` signature of ``content_hash``."""
    steps: list[Step]
    """The plan's steps (``requires_approval`` set from policy)."""
    validation: ValidationReport
    """Static validation report."""
    policy_decisions: list[PolicyDecision]
    """One policy decision per step."""
    cache_hit: bool
    """True when the body was reused from an earlier identical request."""
    provenance_url: str
    """Where every generation attempt of this version is listed."""
    created_at: datetime
    """When the version was stored."""
    plan: Plan
    """The full signed plan, as the executor receives it."""


class PlanSummaryPublic(BaseModel):
    """A plan in a listing."""

    plan_id: UUID
    """Identity of the plan."""
    latest_version: int
    """Number of its latest version."""
    status: str
    """Status of the latest version."""
    intent: str
    """The intent of the plan."""
    created_by: str
    """Subject that created the plan."""
    created_at: datetime
    """When version 1 was stored."""
    updated_at: datetime
    """When the latest version was stored."""


class PlanPage(BaseModel):
    """One page of a plan listing."""

    items: list[PlanSummaryPublic]
    """Plans, newest first."""
    next_cursor: str | None = None
    """Pass as ``cursor`` to get the next page; null on the last page."""


class AttemptPublic(BaseModel):
    """One generation attempt (secrets redacted)."""

    attempt: int
    """1 for the first attempt, then one per repair round."""
    backend: str
    """Backend that made the attempt."""
    model: str | None
    """Model name, for LLM backends."""
    prompt_version: str | None
    """Prompt template version, for LLM backends."""
    messages: list[dict[str, Any]]
    """Prompt messages sent."""
    parameters: dict[str, Any]
    """Request parameters (temperature, seed, ...)."""
    raw_response: str | None
    """What the backend returned, verbatim (redacted)."""
    input_tokens: int | None
    """Prompt tokens reported by the model server."""
    output_tokens: int | None
    """Completion tokens reported by the model server."""
    latency_s: float
    """Wall time of the call, in seconds."""
    error: str | None
    """Transport or server error, if any."""
    issues: list[ValidationIssue]
    """Parse, validation and policy issues found in this attempt."""
    cache_hit: bool
    """True when the attempt reused a cached body instead of generating."""


class Provenance(BaseModel):
    """How one plan version was made."""

    plan_id: UUID
    """The plan."""
    version: int
    """The version."""
    cache_hit: bool
    """True when the body came from the cache."""
    cached_from: dict[str, Any] | None
    """The plan version whose body was reused, on a cache hit."""
    attempts: list[AttemptPublic]
    """Every generation attempt, in order."""


def public_version(stored: StoredVersion) -> PlanVersionPublic:
    """Map a stored version to its API shape."""
    plan = stored.plan
    assert plan.content_hash is not None
    assert plan.signature is not None
    return PlanVersionPublic(
        plan_id=plan.plan_id,
        version=plan.version,
        parent_version=plan.parent_version,
        status=stored.status,
        content_hash=plan.content_hash,
        signature=plan.signature,
        steps=plan.steps,
        validation=stored.validation,
        policy_decisions=stored.policy_decisions,
        cache_hit=stored.cache_hit,
        provenance_url=f"/v1/plans/{plan.plan_id}/versions/{plan.version}/provenance",
        created_at=stored.created_at,
        plan=plan,
    )


def public_attempt(row: AttemptRow) -> AttemptPublic:
    """Map a stored attempt to its API shape."""
    return AttemptPublic(
        attempt=row.attempt,
        backend=row.backend,
        model=row.model,
        prompt_version=row.prompt_version,
        messages=row.messages,
        parameters=row.parameters,
        raw_response=row.raw_response,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        latency_s=row.latency_s,
        error=row.error,
        issues=[ValidationIssue.model_validate(i) for i in row.issues],
        cache_hit=row.cache_hit,
    )
