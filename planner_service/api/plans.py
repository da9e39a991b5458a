"""Plan routes: create, revise, read, list, provenance (issue 4 API)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from planexec.errors import (
    AuthenticationRequiredError,
    ConflictError,
    IdempotencyKeyReusedError,
    LimitExceededError,
    MalformedRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RequestValidationFailedError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)
from planexec.web import PrincipalDep, problem_responses
from planexec.web.auth import require_any_role
from planexec.web.openapi import VersionNumber
from shared_schemas import Principal, Role, sha256_digest

from ..domain.parsing import loads_strict
from ..plan_service import PlanInput, PlanOptions, PlanService, RevisionInput
from ..store import PlanStore, StoredVersion
from .models import (
    PlanCreate,
    PlanOptionsIn,
    PlanPage,
    PlanSummaryPublic,
    PlanVersionPublic,
    Provenance,
    RevisionCreate,
    public_attempt,
    public_version,
)

router = APIRouter(prefix="/v1/plans", tags=["plans"])


async def strict_json_body(request: Request) -> Any:
    """The request body parsed per RFC 8259 + I-JSON (RFC 7493).

    FastAPI's own parser accepts ``NaN``, ``Infinity``, duplicate keys (last wins) and
    integers that lose precision; planexec refuses them instead of guessing.

    Raises:
        MalformedRequestError: the body is not JSON at all (400).
        RequestValidationFailedError: the body is JSON that I-JSON forbids (422).
    """
    body = await request.body()
    try:
        return loads_strict(body)
    except ValueError as exc:
        if type(exc).__name__ == "JSONDecodeError":
            raise MalformedRequestError(f"request body is not valid JSON: {exc}") from exc
        raise RequestValidationFailedError(f"request body refused: {exc}") from exc


StrictBody = Annotated[Any, Depends(strict_json_body)]
Planner = Annotated[Principal, Depends(require_any_role(Role.SUBMITTER, Role.OPERATOR))]
"""Who may plan (403 otherwise): the roles defaults.cedar lets plan, checked before any
generation so that a key without them spends no model tokens."""


def _service(request: Request) -> PlanService:
    service: PlanService = request.app.state.plan_service
    return service


def _store(request: Request) -> PlanStore:
    store: PlanStore = request.app.state.plan_store
    return store


def _options(options: PlanOptionsIn) -> PlanOptions:
    return PlanOptions(**options.model_dump())


def _created(stored: StoredVersion, *, replayed: bool = False) -> Response:
    """201 with the version serialised once by pydantic (no second validation pass)."""
    plan = stored.plan
    headers = {"Location": f"/v1/plans/{plan.plan_id}/versions/{plan.version}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        content=public_version(stored).model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers=headers,
    )


_READ_ERRORS = problem_responses(AuthenticationRequiredError, NotFoundError)
_WRITE_ERRORS = problem_responses(
    MalformedRequestError,
    AuthenticationRequiredError,
    NotFoundError,
    IdempotencyKeyReusedError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    LimitExceededError,
    ServiceUnavailableError,
)


@router.post(
    "",
    operation_id="createPlan",
    status_code=status.HTTP_201_CREATED,
    response_model=PlanVersionPublic,
    responses=_WRITE_ERRORS,
)
async def create_plan(
    request: Request,
    principal: Planner,
    body: PlanCreate,
    _raw: StrictBody,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Repeat a request safely (draft-ietf-httpapi-idempotency-key-header)",
        ),
    ] = None,
) -> Response:
    """Turn an intent (or a draft) into a validated, policy-checked, signed plan version.

    The plan is stored whatever the outcome: ``status`` is ``ready`` or ``rejected`` and the
    validation report and policy decisions say why. The same ``Idempotency-Key`` with the
    same body returns the same plan; with a different body, 409.
    """
    request_input = PlanInput(
        intent=body.intent,
        context=body.context,
        backend=body.backend,
        draft=body.draft,
        options=_options(body.options),
        # Hash the request after defaults are applied: {"intent": x} and
        # {"intent": x, "context": {}} are the same request.
        request_hash=(
            sha256_digest(body.model_dump(mode="json")) if idempotency_key is not None else ""
        ),
    )
    stored, replayed = await _service(request).create(principal, request_input, idempotency_key)
    return _created(stored, replayed=replayed)


@router.post(
    "/{plan_id}/revisions",
    operation_id="revisePlan",
    status_code=status.HTTP_201_CREATED,
    response_model=PlanVersionPublic,
    responses=_WRITE_ERRORS | problem_responses(ConflictError),
)
async def revise_plan(
    request: Request,
    principal: Planner,
    plan_id: UUID,
    body: RevisionCreate,
    _raw: StrictBody,
) -> Response:
    """Make version n+1 from a person's edits (``draft``) or a failure (``failure_context``).

    The new version is validated and checked against policy again; a failure-driven revision
    that adds a side-effecting call marks it ``require_approval``.
    """
    stored = await _service(request).revise(
        principal,
        plan_id,
        RevisionInput(
            base_version=body.base_version,
            draft=body.draft,
            failure_context=body.failure_context,
            backend=body.backend,
            options=None if body.options is None else _options(body.options),
        ),
    )
    return _created(stored)


@router.get(
    "",
    operation_id="listPlans",
    responses=problem_responses(AuthenticationRequiredError, RequestValidationFailedError),
)
async def list_plans(
    request: Request,
    principal: PrincipalDep,
    status: Annotated[str | None, Query(pattern="^(ready|rejected)$")] = None,
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
    request: Request, principal: PrincipalDep, plan_id: UUID, version: VersionNumber
) -> PlanVersionPublic:
    """One version of a plan."""
    stored = await _store(request).get_version(principal.tenant, plan_id, version)
    if stored is None:
        raise NotFoundError(f"plan {plan_id} version {version} not found")
    return public_version(stored)


@router.get(
    "/{plan_id}/versions/{version}/provenance",
    operation_id="getPlanProvenance",
    responses=_READ_ERRORS,
)
async def get_provenance(
    request: Request, principal: PrincipalDep, plan_id: UUID, version: VersionNumber
) -> Provenance:
    """Every generation attempt of a version: prompt, model, raw response, tokens, latency."""
    store = _store(request)
    stored = await store.get_version(principal.tenant, plan_id, version)
    if stored is None:
        raise NotFoundError(f"plan {plan_id} version {version} not found")
    attempts = await store.list_attempts(principal.tenant, plan_id, version)
    return Provenance(
        plan_id=plan_id,
        version=version,
        cache_hit=stored.cache_hit,
        cached_from=stored.cached_from,
        attempts=[public_attempt(a) for a in attempts],
    )
