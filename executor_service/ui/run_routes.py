"""The runs list, the run screen, its live event stream and the operator actions on a run."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import Field, ValidationError

from planexec.errors import NotFoundError, RequestValidationFailedError
from planexec.web.openapi import PG_INTEGER_MAX
from shared_schemas import Role

from ..api import operator as operator_api
from ..api import runs as runs_api
from ..api.models import ForkRequest, ResolveRequest
from ..store.queries import RunQueries
from .deps import ConsoleForm, FormSessionDep, SessionDep, UiRoute, go_to, render, require
from .queries import RUN_STATUSES, ConsoleQueries, RunFilter
from .session import Session
from .templating import TEMPLATES
from .views import RunView, run_view

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)

PAGE_SIZE = 25
"""Runs per page of the runs list, by default."""
MAX_PAGE_SIZE = 200
"""Most runs one page may list."""
STREAM_POLL_S = 0.3
"""How often the live stream looks for new run events, in seconds."""
STREAM_MAX_S = 600.0
"""A live stream ends after this many seconds; the browser's EventSource reconnects."""
EVENTS_SHOWN = 40
"""Latest run events listed on the run screen."""

NOTICES = {
    "cancel": "Cancel requested: the run stops at its driver's next commit.",
    "retry": "This run retries the failed one: succeeded steps are carried over.",
    "fork": "This run is a fork: the chosen step and its descendants run again.",
    "resume": "The run is back with the workers.",
    "resolved": "Decision recorded: the run is back with the workers.",
}
"""Fixed texts a redirect may ask for with ``?notice=``; nothing else is echoed."""


def parse_uuid(value: str, what: str = "run") -> UUID:
    """``value`` as a UUID.

    Raises:
        NotFoundError: when it is not one (no such page).
    """
    try:
        return UUID(value)
    except ValueError:
        raise NotFoundError(f"no {what} {value!r}") from None


def _queries(request: Request) -> RunQueries:
    queries: RunQueries = request.app.state.queries
    return queries


def _console(request: Request) -> ConsoleQueries:
    return ConsoleQueries(request.app.state.engine)


def _instant(value: str, field: str, errors: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors.append(f"{field}: not a date and time")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filters(
    status: str, plan: str, created_from: str, created_to: str
) -> tuple[RunFilter, list[str]]:
    errors: list[str] = []
    plan_id = None
    if status and status not in RUN_STATUSES:
        errors.append(f"status: not one of {', '.join(RUN_STATUSES)}")
    if plan:
        try:
            plan_id = UUID(plan.strip())
        except ValueError:
            errors.append("plan: not a plan id (UUID)")
    start = _instant(created_from, "from", errors)
    end = _instant(created_to, "to", errors)
    return RunFilter(status or None, plan_id, start, end), errors


@router.get("/runs")
async def runs_page(
    request: Request,
    session: SessionDep,
    status: str = "",
    plan: str = "",
    created_from: str = "",
    created_to: str = "",
    cursor: str = "",
    limit: int = PAGE_SIZE,
) -> Response:
    """The tenant's runs, newest first, filtered by status, plan and creation time.

    ``limit`` (1 to ``MAX_PAGE_SIZE``) runs a page; ``cursor`` continues a listing.
    """
    filters, errors = _filters(status, plan, created_from, created_to)
    items: list[dict[str, Any]] = []
    next_cursor = None
    if not errors:
        try:
            items, next_cursor = await _console(request).list_runs(
                session.principal.tenant,
                filters,
                limit=max(1, min(limit, MAX_PAGE_SIZE)),
                cursor=cursor or None,
            )
        except ValueError:
            errors.append("cursor: not one this console made; start from the first page")
    query = {"status": status, "plan": plan, "created_from": created_from}
    query |= {"created_to": created_to}
    if limit != PAGE_SIZE:
        query["limit"] = str(limit)
    return render(
        request,
        "runs.html",
        {
            "session": session,
            "items": items,
            "next_cursor": next_cursor,
            "errors": errors,
            "query": query,
            "statuses": RUN_STATUSES,
            "paged": bool(cursor),
        },
    )


async def _view(request: Request, session: Session, run_id: UUID) -> RunView:
    run = await _queries(request).get_run(session.principal.tenant, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    events = await _console(request).recent_events(
        session.principal.tenant, run_id, limit=EVENTS_SHOWN
    )
    return run_view(run, events, session.principal, datetime.now(UTC))


@router.get("/runs/{run_id}")
async def run_page(
    request: Request, session: SessionDep, run_id: str, notice: str = ""
) -> Response:
    """One run: its DAG, steps, attempts timeline, events and the actions the user may take."""
    view = await _view(request, session, parse_uuid(run_id))
    return render(
        request,
        "run.html",
        {"session": session, "view": view, "notice": NOTICES.get(notice)},
    )


async def _visible_run(request: Request, session: SessionDep, run_id: str) -> UUID:
    """The run id, once known to belong to the user's tenant (checked before streaming)."""
    rid = parse_uuid(run_id)
    if await _queries(request).run_status(session.principal.tenant, rid) is None:
        raise NotFoundError(f"run {rid} not found")
    return rid


def render_live(view: RunView, session: Session) -> str:
    """The live part of the run screen (status, DAG, steps, timeline, events) as HTML."""
    return TEMPLATES.get_template("_run_live.html").render(view=view, session=session)


@router.get("/runs/{run_id}/stream", response_class=EventSourceResponse)
async def run_stream(
    request: Request,
    session: SessionDep,
    run_id: Annotated[UUID, Depends(_visible_run)],
    after: Annotated[int, Query(ge=0, le=PG_INTEGER_MAX)] = 0,
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, le=PG_INTEGER_MAX)
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events for the run screen (htmx SSE extension).

    Whenever the run has events after ``after`` (or ``Last-Event-ID``), an event ``run``
    carries the re-rendered live part of the screen, with the latest event's ``seq`` as its
    id; once the run has ended, an event ``end`` closes the stream.
    """
    tenant = session.principal.tenant
    queries = _queries(request)
    seq = max(after, last_event_id or 0)
    deadline = time.monotonic() + STREAM_MAX_S
    while time.monotonic() < deadline:
        if await queries.events(tenant, run_id, seq, limit=1):
            view = await _view(request, session, run_id)
            seq = view.last_seq
            yield ServerSentEvent(raw_data=render_live(view, session), event="run", id=str(seq))
            if view.terminal:
                yield ServerSentEvent(raw_data="end", event="end")
                return
        elif await queries.run_status(tenant, run_id) in runs_api.TERMINAL:
            yield ServerSentEvent(raw_data="end", event="end")
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(STREAM_POLL_S)


class ForkForm(ConsoleForm):
    """The fork form."""

    from_step: str = Field(default="", max_length=64)


class ResolveForm(ConsoleForm):
    """The form that decides a step in ``needs_attention``."""

    action: str = Field(default="", max_length=32)
    output: str = Field(default="", max_length=1_000_000)
    """The step's output as JSON text (for ``mark_succeeded``)."""
    comment: str = Field(default="", max_length=2000)


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, session: FormSessionDep, run_id: str) -> Response:
    """Cancel the run (operator)."""
    require(session, Role.OPERATOR)
    rid = parse_uuid(run_id)
    await runs_api.cancel_run(request, session.principal, rid)
    return go_to(request, f"/ui/runs/{rid}?notice=cancel")


@router.post("/runs/{run_id}/retry")
async def retry(request: Request, session: FormSessionDep, run_id: str) -> Response:
    """Retry a failed or cancelled run from its failed steps, as a new run (operator)."""
    require(session, Role.OPERATOR)
    created = await operator_api.retry_run(
        request, Response(), session.principal, parse_uuid(run_id)
    )
    return go_to(request, f"/ui/runs/{created.run_id}?notice=retry")


@router.post("/runs/{run_id}/fork")
async def fork(request: Request, session: FormSessionDep, run_id: str, form: ForkForm) -> Response:
    """Fork a new run from a step of a finished run (operator)."""
    require(session, Role.OPERATOR)
    try:
        body = ForkRequest(from_step=form.from_step)
    except ValidationError as exc:
        raise RequestValidationFailedError("choose the step to fork from") from exc
    created = await operator_api.fork_run(
        request, Response(), session.principal, parse_uuid(run_id), body
    )
    return go_to(request, f"/ui/runs/{created.run_id}?notice=fork")


@router.post("/runs/{run_id}/resume")
async def resume(request: Request, session: FormSessionDep, run_id: str) -> Response:
    """Hand a dead-lettered run back to the workers (operator)."""
    require(session, Role.OPERATOR)
    rid = parse_uuid(run_id)
    await operator_api.resume_run(request, session.principal, rid)
    return go_to(request, f"/ui/runs/{rid}?notice=resume")


@router.post("/runs/{run_id}/steps/{step_id}/resolve")
async def resolve(
    request: Request, session: FormSessionDep, run_id: str, step_id: str, form: ResolveForm
) -> Response:
    """Decide a step in ``needs_attention``: mark succeeded (with its output), retry, fail."""
    require(session, Role.OPERATOR)
    rid = parse_uuid(run_id)
    try:
        value = json.loads(form.output) if form.output.strip() else None
    except ValueError as exc:
        raise RequestValidationFailedError(f"output: not JSON ({exc})") from exc
    try:
        body = ResolveRequest.model_validate(
            {"action": form.action, "output": value, "comment": form.comment or None}
        )
    except ValidationError as exc:
        raise RequestValidationFailedError("action: choose mark_succeeded, retry or fail") from exc
    await operator_api.resolve_step(request, session.principal, rid, step_id, body)
    return go_to(request, f"/ui/runs/{rid}?notice=resolved")
