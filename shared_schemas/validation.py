"""Static validation report contract (DESIGN §4, step 4)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import ContractModel


class IssueCode(StrEnum):
    """Stable codes of validation issues; clients may switch on them."""

    SCHEMA = "schema"
    DUPLICATE_STEP_ID = "duplicate_step_id"
    UNKNOWN_TOOL = "unknown_tool"
    MISSING_DEPENDENCY = "missing_dependency"
    CYCLE = "cycle"
    REF_NOT_ANCESTOR = "ref_not_ancestor"
    REF_BAD_POINTER = "ref_bad_pointer"
    ARGS_SCHEMA = "args_schema"
    TOO_MANY_STEPS = "too_many_steps"
    TOO_DEEP = "too_deep"
    OVER_BUDGET = "over_budget"
    UNSAFE_IN_SAFE_MODE = "unsafe_in_safe_mode"
    POLICY_ERROR = "policy_error"
    POLICY_DENIED = "policy_denied"
    GENERATION_FAILED = "generation_failed"


class ValidationIssue(ContractModel):
    """One problem found in a plan; a report lists all of them at once."""

    step_id: str | None = None
    """Id of the step the issue is about, or null for the plan as a whole."""
    code: IssueCode
    """Stable machine-readable code."""
    message: str
    """Human-readable explanation."""
    path: str = ""
    """RFC 6901 JSON Pointer into the plan to the offending value, e.g. ``/steps/2/args/url``."""


class ValidationReport(ContractModel):
    """Outcome of static validation of one plan version."""

    valid: bool
    """True when ``issues`` is empty."""
    issues: list[ValidationIssue] = Field(default_factory=list)
    """Every issue found, in plan order."""
