"""Runs: start, list, inspect, follow (SSE), cancel, approve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from planexec.errors import (
    AuthenticationRequiredError,
    ConflictError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    NotFoundError,
    PlanRefusedError,
    RequestValidationFailedError,
    ServiceUnavailableError,
)
from planexec.web import PrincipalDep, problem_responses, require_role
from planexec.web.openapi import PG_INTEGER_MAX
from shared_schemas import Principal, Role
from shared_schemas.canonical import sha256_digest

from ..domain.admission import admit
from ..domain.states import TERMINAL_RUN
from ..engine.pinning import pinned_specs
from ..planner_client import PlannerClient, PlannerUnavailableError
from ..store import runs as run_store
from ..store.queries import RunQueries
from ..store.runs import NewRun, RunStore
from ..tools.registry import ToolRegistry
from .models import (
    ApprovalRecorded,
    ApprovalRequest,
    RunCreate,
    RunCreated,
    RunDetail,
    RunPage,
    RunSummary,
)

router = APIRouter(prefix="/v1/runs", tags=["runs"])
Approver = Annotated[Principal, Depends(require_role(Role.APPROVER))]
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR))]
Submitter = Annotated[Principal, Depends(require_role(Role.SUBMITTER))]
_READ = problem_responses(AuthenticationRequiredError, NotFoundError)
TERMINAL = frozenset(status.value for status in TERMINAL_RUN)


def _queries(request: Request) -> RunQueries:
    queries: RunQueries = request.app.state.queries
    return queries


@router.post(
    "",
    operation_id="startRun",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(
        AuthenticationRequiredError,
        ForbiddenError,
        NotFoundError,
        IdempotencyKeyReusedError,
        PlanRefusedError,
        ServiceUnavailableError,
    ),
)
async def start_run(
    request: Request,
    response: Response,
    principal: Submitter,
    body: RunCreate,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Repeat a request safely (draft-ietf-httpapi-idempotency-key-header)",
        ),
    ] = None,
) -> RunCreated:
    """Run a stored plan version now: the executor pulls it from the planner and checks it.

    One plan version gets one run: asking again returns the same run (200). With an
    ``Idempotency-Key`` the key decides instead: the same key and body return the same run,
    the same key with another body is 409 ``idempotency-key-reused``. ``mode: dry_run``
    previews the plan with simulated outputs and calls nothing.
    """
    planner: PlannerClient | None = request.app.state.planner
    if planner is None:
        raise ServiceUnavailableError("no planner is configured (PLANEXEC_PLANNER_URL)")
    try:
        found = await planner.fetch(principal.tenant, body.plan_id, body.version)
    except PlannerUnavailableError as exc:
        raise ServiceUnavailableError(str(exc)) from exc
    if found is None:
        raise NotFoundError(f"plan {body.plan_id} version {body.version} not found")
    registry: ToolRegistry = request.app.state.registry
    settings = request.app.state.settings
    refusal = admit(
        found.plan,
        status=found.status,
        signing_key=settings.signing_key_bytes,
        accepted_schema_ids=settings.accepted_schema_ids,
        catalog_version=registry.catalog.catalog_version,
    )
    if refusal is not None:
        raise PlanRefusedError(refusal.message, reason=refusal.code)
    store: RunStore = request.app.state.run_store
    new = NewRun(
        mode=body.mode,
        dedup_key=None if idempotency_key is None else f"key:{idempotency_key}",
        request_hash=None
        if idempotency_key is None
        else sha256_digest(body.model_dump(mode="json")),
        budget_usd=body.budget_usd if body.budget_usd is not None else settings.run_budget_usd,
        tool_specs=pinned_specs(found.plan, registry.get),
    )
    try:
        run_id, created = await store.create_run(
            found.plan, found.policy_decisions, created_by=principal.subject, new=new
        )
    except run_store.IdempotencyKeyReusedError as exc:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used with a different request"
        ) from exc
    if not created:
        response.status_code = status.HTTP_200_OK
    current = await _queries(request).run_status(principal.tenant, run_id)
    return RunCreated(run_id=run_id, created=created, status=current or "pending")


@router.get(
    "",
    operation_id="listRuns",
    responses=problem_responses(AuthenticationRequiredError, RequestValidationFailedError),
)
async def list_runs(
    request: Request,
    principal: PrincipalDep,
    status: Annotated[
        str | None,
        Query(
            pattern="^(pending|running|paused|needs_attention|dead_letter|succeeded|failed"
            "|cancelled)$"
        ),
    ] = None,
    plan_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> RunPage:
    """The tenant's runs, newest first, filtered by status and plan."""
    try:
        items, next_cursor = await _queries(request).list_runs(
            principal.tenant, status=status, plan_id=plan_id, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise RequestValidationFailedError(f"cursor: {exc}") from exc
    return RunPage(items=[RunSummary(**i) for i in items], next_cursor=next_cursor)


@router.get("/{run_id}", operation_id="getRun", responses=_READ)
async def get_run(request: Request, principal: PrincipalDep, run_id: UUID) -> RunDetail:
    """A run with its pinned plan, every step, every attempt and the approvals."""
    run = await _queries(request).get_run(principal.tenant, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    return RunDetail.model_validate(run)


def _sse(event: dict[str, Any]) -> ServerSentEvent:
    data = {
        "run_id": str(event["run_id"]),
        "seq": event["seq"],
        "type": event["type"],
        "step_id": event["step_id"],
        "attempt": event["attempt"],
        "payload": event["payload"],
        "trace_id": event["trace_id"],
        "at": event["at"].isoformat(),
    }
    return ServerSentEvent(data=data, event=event["type"], id=str(event["seq"]))


async def _visible_run(request: Request, principal: PrincipalDep, run_id: UUID) -> UUID:
    """The run id, once known to belong to the caller's tenant (checked before streaming)."""
    if await _queries(request).run_status(principal.tenant, run_id) is None:
        raise NotFoundError(f"run {run_id} not found")
    return run_id


@router.get(
    "/{run_id}/events",
    operation_id="streamRunEvents",
    response_class=EventSourceResponse,
    responses=_READ,
)
async def stream_events(
    request: Request,
    principal: PrincipalDep,
    run_id: Annotated[UUID, Depends(_visible_run)],
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, le=PG_INTEGER_MAX)
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=PG_INTEGER_MAX, description="Send events after this seq")
    ] = 0,
    follow: bool = True,
) -> AsyncIterator[ServerSentEvent]:
    """The run's events as Server-Sent Events, resumable with ``Last-Event-ID``.

    With ``follow`` (the default) the stream stays open until the run ends.
    """
    queries = _queries(request)
    seq = max(after, last_event_id or 0)
    while True:
        events = await queries.events(principal.tenant, run_id, seq)
        for event in events:
            seq = event["seq"]
            yield _sse(event)
        if events:
            continue
        if not follow or (await queries.run_status(principal.tenant, run_id)) in TERMINAL:
            final = await queries.events(principal.tenant, run_id, seq)
            for event in final:
                yield _sse(event)
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.2)


@router.post(
    "/{run_id}/cancel",
    operation_id="cancelRun",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_READ | problem_responses(ForbiddenError),
)
async def cancel_run(request: Request, principal: Operator, run_id: UUID) -> RunSummary:
    """Cancel a run: at once when no worker drives it, else at its driver's next commit."""
    queries = _queries(request)
    if await queries.cancel(principal.tenant, run_id) is None:
        raise NotFoundError(f"run {run_id} not found")
    run = await queries.get_run(principal.tenant, run_id)
    assert run is not None
    return RunSummary.model_validate(run)


@router.post(
    "/{run_id}/steps/{step_id}/approval",
    operation_id="decideApproval",
    responses=_READ | problem_responses(ForbiddenError, ConflictError),
)
async def decide_approval(
    request: Request, principal: Approver, run_id: UUID, step_id: str, body: ApprovalRequest
) -> ApprovalRecorded:
    """Approve or reject a step waiting at its gate; who, when and why are stored.

    The decision is bound to the hash of the step's resolved arguments (``args_hash``):
    what the approver saw is what runs. A repeated decision is a no-op that returns the
    decision on record; a decision after the gate's deadline is 409 (the gate counted as
    rejected).
    """
    queries = _queries(request)
    outcome = await queries.record_approval(
        principal.tenant,
        run_id,
        step_id,
        decision=body.decision,
        by=principal.subject,
        comment=body.comment,
        args_hash=body.args_hash,
    )
    if outcome.existing is None:
        gate = outcome.gate
        if gate is None:
            raise NotFoundError(f"run {run_id} has no step {step_id!r}")
        if gate["status"] != "awaiting_approval":
            raise ConflictError(f"step {step_id!r} of run {run_id} is not waiting for an approval")
        if gate["expired"]:
            raise ConflictError(f"the approval gate of step {step_id!r} expired")
        raise ConflictError(
            f"step {step_id!r} now shows arguments with hash {gate['args_hash']}, not"
            f" {body.args_hash}: look again before deciding"
        )
    return ApprovalRecorded(
        run_id=run_id,
        step_id=step_id,
        recorded=outcome.recorded,
        decision=outcome.existing["decision"],
        decided_by=outcome.existing["decided_by"],
    )
