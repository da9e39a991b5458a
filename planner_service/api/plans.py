"""Plan routes: read plans and versions of the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from planexec.errors import (
    AuthenticationRequiredError,
    NotFoundError,
    RequestValidationFailedError,
)
from planexec.web import PrincipalDep, problem_responses
from shared_schemas import Plan, PolicyDecision, Step, ValidationReport

from ..store import PlanStore, StoredVersion

router = APIRouter(prefix="/v1/plans", tags=["plans"])


class PlanVersionPublic(BaseModel):
    """A stored plan version as returned by the API."""

    plan_id: UUID
    """Identity shared by every version of the plan."""
    version: int
    """Version number, 1 for the first."""
    parent_version: int | None
    """The version this one revises, or null."""
    status: str
    """``ready``, ``awaiting_approval`` or ``rejected``."""
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
    next_cursor: str | None = Field(default=None)
    """Pass as ``cursor`` to get the next page; null on the last page."""


def public_version(stored: StoredVersion) -> PlanVersionPublic:
    """Map a stored version to its API shape."""
    plan = stored.plan
    assert plan.content_hash is not None and plan.signature is not None
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


def _store(request: Request) -> PlanStore:
    store: PlanStore = request.app.state.plan_store
    return store


_READ_ERRORS = problem_responses(AuthenticationRequiredError, NotFoundError)


@router.get(
    "",
    operation_id="listPlans",
    responses=problem_responses(AuthenticationRequiredError, RequestValidationFailedError),
)
async def list_plans(
    request: Request,
    principal: PrincipalDep,
    status: Annotated[str | None, Query(pattern="^(ready|awaiting_approval|rejected)$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> PlanPage:
    """List the caller's tenant's plans, newest first, with cursor pagination."""
    try:
        items, next_cursor = await _store(request).list_plans(
            principal.tenant, status=status, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise RequestValidationFailedError(f"cursor: {exc}") from exc
    return PlanPage(
        items=[PlanSummaryPublic(**vars(item)) for item in items], next_cursor=next_cursor
    )


@router.get("/{plan_id}", operation_id="getPlan", responses=_READ_ERRORS)
async def get_plan(request: Request, principal: PrincipalDep, plan_id: UUID) -> PlanVersionPublic:
    """The latest version of a plan."""
    stored = await _store(request).get_version(principal.tenant, plan_id)
    if stored is None:
        raise NotFoundError(f"plan {plan_id} not found")
    return public_version(stored)


@router.get("/{plan_id}/versions/{version}", operation_id="getPlanVersion", responses=_READ_ERRORS)
async def get_plan_version(
    request: Request, principal: PrincipalDep, plan_id: UUID, version: int
) -> PlanVersionPublic:
    """One version of a plan."""
    stored = await _store(request).get_version(principal.tenant, plan_id, version)
    if stored is None:
        raise NotFoundError(f"plan {plan_id} version {version} not found")
    return public_version(stored)
