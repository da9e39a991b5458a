"""Request and response bodies of the runs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from planexec.web.openapi import VersionNumber
from shared_schemas import Plan, PolicyDecision


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class RunCreate(_Request):
    """``POST /v1/runs``: run a stored plan version now."""

    plan_id: UUID
    """The plan to run."""
    version: VersionNumber
    """Its version; one version gets one run (creation is idempotent), unless the request
    carries an ``Idempotency-Key`` or is a dry run."""
    mode: Literal["normal", "dry_run"] = "normal"
    """``dry_run`` calls no tool: each step gets an output simulated from its tool's
    ``output_schema``, so the plan can be previewed end to end with no side effect."""
    budget_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    """Cost cap of the run in USD (tool estimates and LLM token usage), checked before each
    step; default the executor's ``PLANEXEC_RUN_BUDGET_USD``."""


class ApprovalRequest(_Request):
    """An approver's decision on a gated step."""

    decision: Literal["approve", "reject"]
    """``approve`` lets the step run; ``reject`` fails it (then ``on_failure`` applies)."""
    comment: str | None = Field(default=None, max_length=2000)
    """Why, in words; stored with the decision."""
    args_hash: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    """The ``args_hash`` of the resolved arguments the approver saw (from the run or the
    ``approval.requested`` event); 409 when the gate now shows other arguments."""


class ResolveRequest(_Request):
    """An operator's decision on a step in ``needs_attention`` (its outcome is unknown)."""

    action: Literal["mark_succeeded", "retry", "fail"]
    """``mark_succeeded``: the call (or compensation) happened, with ``output``; ``retry``:
    call it again, same idempotency key; ``fail``: it did not happen and must not."""
    output: Any = None
    """The step's output for ``mark_succeeded`` of a call (checked by nothing: the operator
    vouches for it)."""
    comment: str | None = Field(default=None, max_length=2000)
    """Why, in words; stored in the run's events."""


class ForkRequest(_Request):
    """Fork a new run from a step of an old one."""

    from_step: str = Field(min_length=1, max_length=64)
    """This step and every step after it (its descendants) run again, as new calls with new
    idempotency keys; the other steps that succeeded keep their recorded outputs."""


class RunSummary(BaseModel):
    """A run in a listing."""

    run_id: UUID
    plan_id: UUID
    plan_version: int
    status: str
    """``pending``, ``running``, ``paused``, ``needs_attention``, ``dead_letter``,
    ``succeeded``, ``failed``, ``cancelled``."""
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    mode: str = "normal"
    """``normal``, ``replay`` (recorded outputs) or ``dry_run`` (simulated outputs)."""
    parent_run_id: UUID | None = None
    """The run this one was retried, forked or replayed from."""


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
    args_hash: str | None = None
    """Hash (RFC 8785, SHA-256) of ``resolved_args`` shown at the approval gate."""
    gate_deadline: datetime | None = None
    """When the open approval gate expires (then it counts as a rejection)."""


class AttemptView(BaseModel):
    """One attempt of one step."""

    step_id: str
    kind: str = "action"
    """``action`` (the step's call) or ``compensation`` (its undo)."""
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
    args_hash: str | None = None
    """Hash of the resolved arguments the decision is bound to."""


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
    fork_from_step: str | None = None
    budget_usd: float | None = None
    """The run's cost cap in USD, if any."""
    spent_usd: float = 0.0
    """What the run's attempts cost so far, in USD."""
    replans: int = 0
    """Replans made (each switched the run to a new plan version)."""
    recovery_attempts: int = 0
    """Recoveries from a lost worker since a step last succeeded."""
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
