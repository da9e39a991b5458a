"""Policy decision contract (DESIGN §4, step 5)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import ContractModel


class Decision(StrEnum):
    """Outcome of the policy check of one step."""

    ALLOW = "allow"
    """The step may run unattended."""
    REQUIRE_APPROVAL = "require_approval"
    """The step may run only after a person with the approver role approves it."""
    DENY = "deny"
    """The step may not run; the plan is rejected."""


class PolicyDecision(ContractModel):
    """The policy engine's verdict on one step for one principal."""

    step_id: str
    """Id of the step judged."""
    tool: str
    """Catalog name of the step's tool."""
    decision: Decision
    """``allow``, ``require_approval`` or ``deny``."""
    rule_ids: list[str] = Field(default_factory=list)
    """Ids (Cedar ``@id`` annotations) of the policies that decided."""
    errors: list[str] = Field(default_factory=list)
    """Evaluation errors. Any error fails closed: the decision is then ``deny``."""
