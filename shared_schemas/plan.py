"""The plan contract, schema id ``planexec.plan/v1`` (DESIGN §2).

A plan is a DAG of tool-call steps. It is immutable once stored; a change is a new version of
the same ``plan_id``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Literal
from uuid import UUID

from pydantic import Field

from ._base import ContractModel
from .tool import TOOL_NAME_PATTERN

PLAN_SCHEMA_ID: Final = "planexec.plan/v1"
"""The schema id this package speaks; a breaking change bumps it."""

STEP_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class OnFailure(StrEnum):
    """What the executor does when a step fails for good."""

    FAIL = "fail"
    """Fail the run."""
    RETRY = "retry"
    """Retry by the step's retry policy, then fail the run."""
    SKIP = "skip"
    """Mark the step skipped and go on; dependants see no output."""
    REPLAN = "replan"
    """Ask the planner for a revision with the failure context."""
    COMPENSATE = "compensate"
    """Fail the run and run the compensations of completed steps in reverse order."""


class RetryPolicy(ContractModel):
    """Exponential backoff with jitter ("Exponential Backoff And Jitter", AWS, 2015)."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts in all, the first included."""
    initial_backoff_s: float = Field(default=0.5, ge=0, le=3600)
    """Delay before the second attempt, in seconds."""
    max_backoff_s: float = Field(default=30.0, ge=0, le=86400)
    """Upper bound of any delay, in seconds."""
    multiplier: float = Field(default=2.0, ge=1, le=10)
    """Growth factor of the delay between attempts."""
    jitter: Literal["full", "none"] = "full"
    """``full``: the delay is uniform in [0, backoff]; ``none``: exactly the backoff."""


class AssertionOp(StrEnum):
    """Comparison of a simple success assertion."""

    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EXISTS = "exists"
    CONTAINS = "contains"


class OutputAssertion(ContractModel):
    """A simple check on one value of a step's output."""

    path: str = Field(pattern=r"^(/([^~/]|~[01])*)*$", max_length=1024)
    """RFC 6901 JSON Pointer into the output; ``""`` is the whole output."""
    op: AssertionOp
    """The comparison to apply."""
    value: Any = None
    """The operand (ignored by ``exists``)."""


class SuccessCriteria(ContractModel):
    """What a step's output must meet to count as success."""

    output_schema: dict[str, Any] | None = None
    """JSON Schema (Draft 2020-12) the output must satisfy, on top of the tool's own."""
    assertions: list[OutputAssertion] = Field(default_factory=list, max_length=32)
    """Simple assertions, all of which must hold."""


class Compensation(ContractModel):
    """The call that undoes a completed step (saga pattern)."""

    tool: str = Field(pattern=TOOL_NAME_PATTERN)
    """Catalog name of the compensating tool."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments; may hold ``$ref`` values into this step's output."""


class Step(ContractModel):
    """One tool call in a plan.

    An argument value ``{"$ref": "<step_id>.output<json pointer>"}`` is replaced at run time
    by part of an earlier step's output; the referenced step must be an ancestor in the DAG.
    """

    id: str = Field(pattern=STEP_ID_PATTERN)
    """Slug, unique in the plan."""
    tool: str = Field(pattern=TOOL_NAME_PATTERN)
    """Catalog name of the tool to call."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments (a JSON object), checked against the tool's ``input_schema``."""
    depends_on: list[str] = Field(default_factory=list, max_length=256)
    """Ids of the steps that must succeed before this one starts."""
    description: str | None = Field(default=None, max_length=2048)
    """What the step is for, in words."""
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    """Timeout of one attempt in seconds; null means the tool's ``default_timeout_s``."""
    heartbeat_timeout_s: float | None = Field(default=None, gt=0, le=86400)
    """An attempt that has not heartbeated for this many seconds fails with a retryable
    ``heartbeat_timeout`` (for long-running tools that report progress); null: not checked."""
    approval_timeout_s: float | None = Field(default=None, gt=0, le=31_536_000)
    """How long an approval gate stays open, in seconds; an expired gate counts as a
    rejection. Null means the executor's default (``PLANEXEC_APPROVAL_TIMEOUT_S``)."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """Retry policy for retryable errors."""
    idempotency_key: str | None = Field(default=None, max_length=255)
    """Key sent to the tool; null means a hash of plan id, version, step id and resolved args."""
    on_failure: OnFailure = OnFailure.FAIL
    """What to do when the step fails for good."""
    success_criteria: SuccessCriteria | None = None
    """Extra checks of the output beyond the tool's ``output_schema``."""
    requires_approval: bool = False
    """Set by the planner from the policy decision; never taken from a backend or a caller."""
    compensation: Compensation | None = None
    """How to undo this step if the run fails later."""


class AlternativeSummary(ContractModel):
    """Another candidate plan the backend considered, in summary."""

    summary: str = Field(max_length=2048)
    """What the alternative would have done."""
    reason_rejected: str | None = Field(default=None, max_length=2048)
    """Why it was not chosen."""


class PlannerInfo(ContractModel):
    """Which backend produced a plan, and how."""

    backend: Literal["template", "openai", "draft"]
    """The ``PlannerBackend`` that generated the steps."""
    model: str | None = None
    """Model name, for LLM backends."""
    prompt_version: str | None = None
    """Version of the prompt template, for LLM backends."""
    template_id: str | None = None
    """Id of the plan template, for the template backend."""


class PlanDraft(ContractModel):
    """The part of a plan a backend (or a caller, as a draft) produces."""

    steps: list[Step] = Field(max_length=10_000)
    """The steps, a DAG through ``depends_on``."""
    rationale: str | None = Field(default=None, max_length=16_384)
    """Why these steps achieve the intent."""
    confidence: float | None = Field(default=None, ge=0, le=1)
    """The backend's confidence that the plan achieves the intent, 0..1."""
    alternatives: list[AlternativeSummary] = Field(default_factory=list, max_length=16)
    """Other candidate plans, summarised."""


class Plan(ContractModel):
    """One immutable version of a plan, as stored, signed and dispatched."""

    schema_version: Literal["planexec.plan/v1"] = PLAN_SCHEMA_ID
    """Schema id of this contract."""
    plan_id: UUID
    """Identity shared by every version of the plan."""
    version: int = Field(ge=1)
    """Version number, 1 for the first."""
    parent_version: int | None = Field(default=None, ge=1)
    """Version this one revises; null for version 1."""
    intent: str = Field(max_length=16_384)
    """What the caller asked for, in words."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Caller-supplied facts the plan may use (a JSON object)."""
    tenant: str = Field(min_length=1, max_length=128)
    """Tenant that owns the plan."""
    created_by: str = Field(min_length=1, max_length=256)
    """Subject of the principal that asked for this version."""
    steps: list[Step] = Field(max_length=10_000)
    """The steps, a DAG through ``depends_on``."""
    rationale: str | None = Field(default=None, max_length=16_384)
    """Why these steps achieve the intent."""
    confidence: float | None = Field(default=None, ge=0, le=1)
    """The backend's confidence that the plan achieves the intent, 0..1."""
    alternatives: list[AlternativeSummary] = Field(default_factory=list, max_length=16)
    """Other candidate plans, summarised."""
    catalog_version: str
    """Version (hash) of the tool catalog the plan was made against."""
    policy_version: str
    """Version (hash) of the policy set the plan was checked against."""
    planner: PlannerInfo
    """Backend, model and prompt version that produced the steps."""
    traceparent: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
    )
    """W3C Trace Context ``traceparent`` of the request that created this version."""
    content_hash: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    """``sha256:`` + hex digest of the RFC 8785 canonical JSON of the plan body."""
    signature: str | None = Field(default=None, pattern=r"^hmac-sha256:[0-9a-f]{64}$")
    """``hmac-sha256:`` + hex HMAC-SHA256 of ``content_hash`` under the planner's signing key."""
