"""Operator actions on runs: resolve a step, resume a dead letter, retry, fork, replay."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response, status

from planexec.errors import (
    AuthenticationRequiredError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PlanRefusedError,
)
from planexec.web import problem_responses, require_role
from shared_schemas import Plan, PolicyDecision, Principal, Role

from ..domain.admission import admit
from ..engine.pinning import pinned_specs
from ..store.operator import ActionRefused, OperatorActions
from ..store.queries import RunQueries
from ..store.runs import NewRun, RunStore
from ..tools.registry import ToolRegistry
from .models import ForkRequest, ResolveRequest, RunCreated, RunSummary

router = APIRouter(prefix="/v1/runs", tags=["operator"])
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR))]
_ERRORS = problem_responses(AuthenticationRequiredError, ForbiddenError, NotFoundError)
_NEW_RUN_ERRORS = _ERRORS | problem_responses(ConflictError, PlanRefusedError)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def _queries(request: Request) -> RunQueries:
    queries: RunQueries = request.app.state.queries
    return queries


def _operator(request: Request) -> OperatorActions:
    actions: OperatorActions = request.app.state.operator
    return actions


async def _summary(request: Request, tenant: str, run_id: UUID) -> RunSummary:
    run = await _queries(request).get_run(tenant, run_id)
    assert run is not None
    return RunSummary.model_validate(run)


@router.post(
    "/{run_id}/steps/{step_id}/resolve",
    operation_id="resolveStep",
    responses=_ERRORS | problem_responses(ConflictError),
)
async def resolve_step(
    request: Request, principal: Operator, run_id: UUID, step_id: str, body: ResolveRequest
) -> RunSummary:
    """Decide a step in ``needs_attention``; the run goes back to the workers.

    The step's outcome is unknown (a non-idempotent call or compensation was in flight when
    its worker was lost): ``mark_succeeded`` with its output, ``retry`` it with the same
    idempotency key, or ``fail`` it.
    """
    outcome = await _operator(request).resolve_step(
        principal.tenant,
        run_id,
        step_id,
        action=body.action,
        output=body.output,
        by=principal.subject,
        comment=body.comment,
    )
    if outcome is None:
        raise NotFoundError(f"run {run_id} has no step {step_id!r}")
    if isinstance(outcome, ActionRefused):
        raise ConflictError(outcome.reason)
    return await _summary(request, principal.tenant, run_id)


@router.post(
    "/{run_id}/resume",
    operation_id="resumeRun",
    responses=_ERRORS | problem_responses(ConflictError),
)
async def resume_run(request: Request, principal: Operator, run_id: UUID) -> RunSummary:
    """Hand a dead-lettered run (recovered too often without progress) back to the workers."""
    if not await _operator(request).resume(principal.tenant, run_id, principal.subject):
        current = await _queries(request).run_status(principal.tenant, run_id)
        if current is None:
            raise NotFoundError(f"run {run_id} not found")
        raise ConflictError(f"run {run_id} is {current}, not dead_letter")
    return await _summary(request, principal.tenant, run_id)


def _descendants(plan: Plan, step_id: str) -> set[str]:
    """``step_id`` and every step that depends on it, directly or not."""
    found = {step_id}
    changed = True
    while changed:
        changed = False
        for step in plan.steps:
            if step.id not in found and found.intersection(step.depends_on):
                found.add(step.id)
                changed = True
    return found


async def _derive(
    request: Request,
    response: Response,
    principal: Principal,
    run_id: UUID,
    *,
    kind: str,
    from_step: str | None = None,
) -> RunCreated:
    """Create a retry, fork or replay of a finished run of the caller's tenant."""
    source = await _queries(request).get_run(principal.tenant, run_id)
    if source is None:
        raise NotFoundError(f"run {run_id} not found")
    if source["status"] not in FINISHED:
        raise ConflictError(
            f"run {run_id} is {source['status']}; only a finished run can be"
            f" {'retried' if kind == 'retry' else kind + 'ed'}"
        )
    plan = Plan.model_validate(source["plan"])
    decisions = [PolicyDecision.model_validate(d) for d in source["policy_decisions"]]
    if from_step is not None and from_step not in {s.id for s in plan.steps}:
        raise NotFoundError(f"run {run_id} has no step {from_step!r}")
    registry: ToolRegistry = request.app.state.registry
    settings = request.app.state.settings
    refusal = admit(
        plan,
        status="ready",
        signing_key=settings.signing_key_bytes,
        accepted_schema_ids=settings.accepted_schema_ids,
        catalog_version=registry.catalog.catalog_version,
    )
    if refusal is not None:
        raise PlanRefusedError(refusal.message, reason=refusal.code)
    succeeded = {s["step_id"]: s for s in source["steps"] if s["status"] == "succeeded"}
    rerun = _descendants(plan, from_step) if from_step is not None else set()
    carried: dict[str, dict[str, Any]] = {}
    if kind in ("retry", "fork"):
        carried = {
            sid: {"output": row["output"], "resolved_args": row["resolved_args"]}
            for sid, row in succeeded.items()
            if sid not in rerun
        }
    new = NewRun(
        mode="replay" if kind == "replay" else "normal",
        parent_run_id=run_id,
        fork_from_step=from_step,
        # A retry repeats the same logical calls (same idempotency keys); a fork is a new
        # execution (new keys).
        key_scope=source["key_scope"] if kind == "retry" else f"fork:{uuid.uuid4()}",
        dedup_key=f"retry:{run_id}" if kind == "retry" else None,
        budget_usd=source["budget_usd"],
        tool_specs=pinned_specs(plan, registry.get),
        carried=carried,
    )
    store: RunStore = request.app.state.run_store
    new_id, created = await store.create_run(plan, decisions, created_by=principal.subject, new=new)
    if not created:
        response.status_code = status.HTTP_200_OK
    current = await _queries(request).run_status(principal.tenant, new_id)
    return RunCreated(run_id=new_id, created=created, status=current or "pending")


@router.post(
    "/{run_id}/retry",
    operation_id="retryRun",
    status_code=status.HTTP_201_CREATED,
    responses=_NEW_RUN_ERRORS,
)
async def retry_run(
    request: Request, response: Response, principal: Operator, run_id: UUID
) -> RunCreated:
    """Retry a finished run from its failed steps, as a new run.

    The new run keeps the outputs of the steps that succeeded (not compensated ones) and runs
    the rest with the same idempotency keys, so a call that did happen is not repeated. One
    retry per run (asking again returns it, 200).
    """
    return await _derive(request, response, principal, run_id, kind="retry")


@router.post(
    "/{run_id}/fork",
    operation_id="forkRun",
    status_code=status.HTTP_201_CREATED,
    responses=_NEW_RUN_ERRORS,
)
async def fork_run(
    request: Request, response: Response, principal: Operator, run_id: UUID, body: ForkRequest
) -> RunCreated:
    """Fork a new run from step ``from_step`` of a finished run.

    That step and its descendants run again as new calls (new idempotency keys); the other
    steps keep their recorded outputs.
    """
    return await _derive(
        request, response, principal, run_id, kind="fork", from_step=body.from_step
    )


@router.post(
    "/{run_id}/replay",
    operation_id="replayRun",
    status_code=status.HTTP_201_CREATED,
    responses=_NEW_RUN_ERRORS,
)
async def replay_run(
    request: Request, response: Response, principal: Operator, run_id: UUID
) -> RunCreated:
    """Replay a finished run: no tool is called, no side effect happens.

    A new run in mode ``replay`` whose steps return the outputs the source run recorded,
    verified again against the tools' schemas and the steps' criteria.
    """
    return await _derive(request, response, principal, run_id, kind="replay")
