"""The planexec wire contract: pydantic v2 models shared by planner and executor."""

from .canonical import (
    CanonicalJSONError,
    canonical_json,
    catalog_version,
    content_hash,
    plan_body,
    seal,
    sha256_digest,
    sign,
    verify,
)
from .events import RunEvent
from .plan import (
    PLAN_SCHEMA_ID,
    AlternativeSummary,
    AssertionOp,
    Compensation,
    OnFailure,
    OutputAssertion,
    Plan,
    PlanDraft,
    PlannerInfo,
    RetryPolicy,
    Step,
    SuccessCriteria,
)
from .policy import Decision, PolicyDecision
from .principal import Principal, Role
from .problem import ProblemDetails
from .tool import SideEffect, ToolCatalog, ToolMeter, ToolSpec
from .validation import IssueCode, ValidationIssue, ValidationReport

__all__ = [
    "PLAN_SCHEMA_ID",
    "AlternativeSummary",
    "AssertionOp",
    "CanonicalJSONError",
    "Compensation",
    "Decision",
    "IssueCode",
    "OnFailure",
    "OutputAssertion",
    "Plan",
    "PlanDraft",
    "PlannerInfo",
    "PolicyDecision",
    "Principal",
    "ProblemDetails",
    "RetryPolicy",
    "Role",
    "RunEvent",
    "SideEffect",
    "Step",
    "SuccessCriteria",
    "ToolCatalog",
    "ToolMeter",
    "ToolSpec",
    "ValidationIssue",
    "ValidationReport",
    "canonical_json",
    "catalog_version",
    "content_hash",
    "plan_body",
    "seal",
    "sha256_digest",
    "sign",
    "verify",
]
