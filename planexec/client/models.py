"""Response bodies of the planner and executor APIs, as the people CLI reads them.

Only the fields the CLI uses are declared and checked; every other field is kept as it came
(``extra="allow"``), so ``--json`` output shows the whole body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    """A response body: the fields the CLI reads are checked, the rest kept as they came."""

    model_config = ConfigDict(extra="allow")


class PlanStepView(_Body):
    """A step of a plan as the planner returns it."""

    id: str
    tool: str
    depends_on: list[str] = Field(default_factory=list)
    requires_approval: bool = False


class PolicyDecisionView(_Body):
    """The policy decision on one step, with the Cedar ``@id`` of the rules that decided."""

    step_id: str
    tool: str
    decision: str
    rule_ids: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class IssueView(_Body):
    """One validation issue: ``{step_id, code, message}``."""

    step_id: str | None = None
    code: str
    message: str


class ValidationView(_Body):
    """The static validation report of a plan version."""

    valid: bool
    issues: list[IssueView] = Field(default_factory=list)


class PlanVersion(_Body):
    """``POST /v1/plans`` response: one stored plan version."""

    plan_id: UUID
    version: int
    status: str
    """``ready`` or ``rejected``."""
    content_hash: str
    cache_hit: bool = False
    steps: list[PlanStepView]
    validation: ValidationView
    policy_decisions: list[PolicyDecisionView] = Field(default_factory=list)


class RunSummary(_Body):
    """A run in a listing."""

    run_id: UUID
    plan_id: UUID
    plan_version: int
    status: str
    created_by: str
    created_at: datetime
    finished_at: datetime | None = None


class RunPage(_Body):
    """One page of runs, newest first."""

    items: list[RunSummary]
    next_cursor: str | None = None


class RunStepState(_Body):
    """A step's state in a run."""

    step_id: str
    status: str
    attempts: int
    error: dict[str, Any] | None = None
    first_started_at: datetime | None = None
    finished_at: datetime | None = None


class ApprovalView(_Body):
    """A recorded approval decision."""

    step_id: str
    decision: str
    decided_by: str
    comment: str | None = None
    decided_at: datetime


class PinnedPlan(_Body):
    """The plan version a run is pinned to (only its steps are read here)."""

    steps: list[PlanStepView]


class RunDetail(RunSummary):
    """``GET /v1/runs/{id}``: a run with its steps and approvals."""

    error: dict[str, Any] | None = None
    plan: PinnedPlan
    steps: list[RunStepState]
    approvals: list[ApprovalView] = Field(default_factory=list)


class ApprovalRecorded(_Body):
    """The decision on record for a gated step, and whether this call recorded it."""

    run_id: UUID
    step_id: str
    recorded: bool
    decision: str
    decided_by: str


class RunEvent(_Body):
    """One run event from the SSE stream: ``{run_id, seq, type, step_id, attempt, payload, at}``."""

    run_id: UUID
    seq: int
    type: str
    step_id: str | None = None
    attempt: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    at: datetime
