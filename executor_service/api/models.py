"""Request and response bodies of the runs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared_schemas import Plan, PolicyDecision


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class RunCreate(_Request):
    """``POST /v1/runs``: run a stored plan version now."""

    plan_id: UUID
    """The plan to run."""
    version: int = Field(ge=1)
    """Its version; one version gets one run (creation is idempotent)."""


class ApprovalRequest(_Request):
    """An approver's decision on a gated step."""

    decision: Literal["approve", "reject"]
    """``approve`` lets the step run; ``reject`` fails it (then ``on_failure`` applies)."""
    comment: str | None = Field(default=None, max_length=2000)
    """Why, in words; stored with the decision."""


class RunSummary(BaseModel):
    """A run in a listing."""

    run_id: UUID
    plan_id: UUID
    plan_version: int
    status: str
    """``pending``, ``running``, ``paused``, ``needs_attention``, ``succeeded``, ``failed``,
    ``cancelled``."""
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RunPage(BaseModel):
    """One page of runs, newest first."""

    items: list[RunSummary]
    next_cursor: str | None = None
    """Pass as ``cursor`` for the next page; null on the last."""


class StepView(BaseModel):
    """A step's state in a run."""

    step_id: str
    status: str
    attempts: int
    """Attempts started."""
    resolved_args: Any = None
    """The arguments the last attempt ran with (every ``$ref`` resolved)."""
    output: Any = None
    """The output, once succeeded."""
    error: dict[str, Any] | None = None
    """The last error: ``{code, message, retryable}``."""
    next_attempt_at: datetime | None = None
    first_started_at: datetime | None = None
    finished_at: datetime | None = None


class AttemptView(BaseModel):
    """One attempt of one step."""

    step_id: str
    attempt: int
    idempotency_key: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    """Wall time of the call, in seconds."""
    error: dict[str, Any] | None
    worker: str | None


class ApprovalView(BaseModel):
    """A recorded approval decision: who, when, why."""

    step_id: str
    decision: str
    decided_by: str
    comment: str | None
    decided_at: datetime


class RunDetail(RunSummary):
    """A run with its pinned plan, steps, attempts and approvals."""

    content_hash: str
    catalog_version: str
    policy_version: str
    error: dict[str, Any] | None
    cancel_requested: bool
    lease_owner: str | None
    """The worker driving the run now, if any."""
    traceparent: str | None
    plan: Plan
    """The plan version the run is pinned to."""
    policy_decisions: list[PolicyDecision]
    steps: list[StepView]
    attempts: list[AttemptView]
    approvals: list[ApprovalView]


class RunCreated(BaseModel):
    """The run of a plan version."""

    run_id: UUID
    created: bool
    """False when the plan version already had a run (returned instead)."""
    status: str


class ApprovalRecorded(BaseModel):
    """The decision on record for a gated step."""

    run_id: UUID
    step_id: str
    recorded: bool
    """False when an earlier decision stands (a duplicate approval is a no-op)."""
    decision: str
    decided_by: str
