"""Dispatch routes for executors (service keys with the ``planexec:dispatch`` scope)."""

from __future__ import annotations

import time
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from planexec.auth import ApiKeyStore
from planexec.db.notify import Notifier
from planexec.errors import (
    AuthenticationRequiredError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RequestValidationFailedError,
)
from planexec.web import DISPATCH_SCOPE, problem_responses, require_scope
from planexec.web.openapi import VersionNumber
from shared_schemas import Plan, PolicyDecision, Principal

from ..plan_service import PlanService, RevisionInput
from ..store.dispatch import DispatchStore

router = APIRouter(prefix="/v1/dispatch", tags=["dispatch"])
ServicePrincipal = Annotated[Principal, Depends(require_scope(DISPATCH_SCOPE))]
_ERRORS = problem_responses(AuthenticationRequiredError, ForbiddenError)


class ClaimRequest(BaseModel):
    """What an executor worker asks for."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    worker: str = Field(min_length=1, max_length=200)
    """Identity of the claiming worker; the lease is held in its name."""
    max_items: int = Field(default=10, ge=1, le=100)
    """Most plans to claim at once."""
    lease_s: float = Field(default=30.0, ge=1, le=600)
    """How long the claim holds before it is handed out again, in seconds."""
    wait_s: float = Field(default=0.0, ge=0, le=30)
    """Long poll: wait up to this many seconds for work when the queue is empty."""


class ClaimedPlan(BaseModel):
    """A claimed plan version."""

    dispatch_id: UUID
    """Id to acknowledge the claim with."""
    claims: int
    """How many times this entry was claimed (more than 1 after an expired lease)."""
    plan: Plan
    """The signed plan; verify its hash and signature before running it."""
    policy_decisions: list[PolicyDecision]
    """The planner's policy decision per step."""


class ClaimResponse(BaseModel):
    """Claimed plans (possibly none)."""

    items: list[ClaimedPlan]
    """The claimed plans, oldest first."""


class AckRequest(BaseModel):
    """Acknowledge a claim once the run exists."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    worker: str = Field(min_length=1, max_length=200)
    """The worker that holds the claim."""
    run_id: UUID
    """The run created for the plan."""


class DispatchedPlan(BaseModel):
    """A plan version as the executor fetches it for ``POST /v1/runs``."""

    plan: Plan
    """The signed plan."""
    policy_decisions: list[PolicyDecision]
    """The planner's policy decision per step."""
    status: str
    """``ready`` or ``rejected``; only ready plans may run."""


class ReplanRequest(BaseModel):
    """An executor asks for version n+1 of a plan because a run's step failed for good."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    tenant: str = Field(min_length=1, max_length=128)
    """Tenant of the plan and the run."""
    base_version: VersionNumber
    """The version the run executes; 409 when it is no longer the latest."""
    run_id: UUID
    """The run that asks (recorded with the failure context)."""
    failure_context: dict[str, Any]
    """What failed: step id, error, and the completed steps. Tool outputs in it are untrusted
    data; the revision is validated and checked against policy like any draft."""


def _store(request: Request) -> DispatchStore:
    store: DispatchStore = request.app.state.dispatch_store
    return store


@router.post("/claim", operation_id="claimDispatch", responses=_ERRORS)
async def claim(request: Request, _: ServicePrincipal, body: ClaimRequest) -> ClaimResponse:
    """Lease queued plans to a worker (``FOR UPDATE SKIP LOCKED``), long-polling if asked."""
    store = _store(request)
    items = await store.claim(body.worker, max_items=body.max_items, lease_s=body.lease_s)
    notifier: Notifier = request.app.state.notifier
    deadline = time.monotonic() + body.wait_s
    while not items and (remaining := deadline - time.monotonic()) > 0:
        if await notifier.wait("planexec_dispatch", remaining):
            items = await store.claim(body.worker, max_items=body.max_items, lease_s=body.lease_s)
    return ClaimResponse(
        items=[
            ClaimedPlan(
                dispatch_id=c.dispatch_id,
                claims=c.claims,
                plan=c.plan,
                policy_decisions=c.policy_decisions,
            )
            for c in items
        ]
    )


@router.post(
    "/{dispatch_id}/ack",
    operation_id="ackDispatch",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_ERRORS | problem_responses(ConflictError),
)
async def ack(request: Request, _: ServicePrincipal, dispatch_id: UUID, body: AckRequest) -> None:
    """Acknowledge a claim; 409 when the worker no longer holds its lease."""
    if not await _store(request).ack(dispatch_id, body.worker, body.run_id):
        raise ConflictError(f"dispatch {dispatch_id} is not leased to {body.worker}")


@router.get(
    "/plans/{plan_id}/versions/{version}",
    operation_id="getDispatchPlan",
    responses=_ERRORS | problem_responses(NotFoundError),
)
async def plan_for_executor(
    request: Request,
    _: ServicePrincipal,
    plan_id: UUID,
    version: VersionNumber,
    tenant: Annotated[str, Query(min_length=1, max_length=128)],
) -> DispatchedPlan:
    """A tenant's plan version, for an executor starting a run directly."""
    found = await _store(request).plan_for(tenant, plan_id, version)
    if found is None:
        raise NotFoundError(f"plan {plan_id} version {version} not found")
    plan, decisions, plan_status = found
    return DispatchedPlan(plan=plan, policy_decisions=decisions, status=plan_status)


@router.post(
    "/plans/{plan_id}/revisions",
    operation_id="replanForExecutor",
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS
    | problem_responses(NotFoundError, ConflictError, RequestValidationFailedError),
)
async def replan(
    request: Request, _: ServicePrincipal, plan_id: UUID, body: ReplanRequest
) -> DispatchedPlan:
    """Revise a plan after a run's failure, on behalf of the plan's creator.

    Policy is evaluated for the creator as they are now (the union of their live keys' roles
    and scopes), never for the service key; a revision that adds a side-effecting call is
    marked ``require_approval`` (rule ``planexec.revision.new-side-effect``).
    """
    plans = _store(request)
    found = await plans.plan_for(body.tenant, plan_id, body.base_version)
    if found is None:
        raise NotFoundError(f"plan {plan_id} version {body.base_version} not found")
    keys: ApiKeyStore = request.app.state.key_store
    creator = await keys.principal_of(body.tenant, found[0].created_by)
    service: PlanService = request.app.state.plan_service
    stored = await service.revise(
        creator,
        plan_id,
        RevisionInput(
            base_version=body.base_version,
            failure_context={**body.failure_context, "run_id": str(body.run_id)},
        ),
    )
    return DispatchedPlan(
        plan=stored.plan, policy_decisions=stored.policy_decisions, status=stored.status
    )
