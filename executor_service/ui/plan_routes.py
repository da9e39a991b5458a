"""The plans list and the plan screen, read from the planner as the logged-in user."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from planexec.errors import ServiceUnavailableError

from .deps import SessionDep, UiRoute, render
from .plans import PlannerReader, version_diff
from .run_routes import parse_uuid
from .session import Session

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)


def _reader(request: Request, session: Session) -> PlannerReader:
    url: str | None = request.app.state.settings.planner_url
    if not url:
        raise ServiceUnavailableError("no planner is configured (PLANEXEC_PLANNER_URL)")
    return PlannerReader(url, session.api_key)


def _number(value: str) -> int | None:
    return int(value) if value.isdigit() and 0 < int(value) < 1_000_000 else None


@router.get("/plans")
async def plans_page(
    request: Request, session: SessionDep, status: str = "", cursor: str = ""
) -> Response:
    """The tenant's plans, newest first (``GET /v1/plans`` with the user's key)."""
    chosen = status if status in ("ready", "rejected") else None
    page = await _reader(request, session).list_plans(status=chosen, cursor=cursor or None)
    return render(
        request,
        "plans.html",
        {
            "session": session,
            "items": page["items"],
            "next_cursor": page.get("next_cursor"),
            "status": chosen or "",
        },
    )


@router.get("/plans/{plan_id}")
async def plan_page(
    request: Request, session: SessionDep, plan_id: str, v: str = "", a: str = "", b: str = ""
) -> Response:
    """A plan: versions, a diff, one version's steps and report, its provenance.

    ``v`` picks the version shown (default the latest), ``a`` and ``b`` the two sides of the
    diff (default the shown version and the one before it).
    """
    pid = parse_uuid(plan_id, "plan")
    version, old, new = _number(v), _number(a), _number(b)
    sides = tuple(n for n in (old, new) if n is not None)
    data = await _reader(request, session).plan(pid, version, sides)
    current = data.current
    listed = {x["version"]: x for x in data.versions}
    if old is None or new is None:
        new = current["version"]
        old = new - 1 if new > 1 else None
    diff = None
    if old is not None and new is not None and old in listed and new in listed:
        diff = version_diff(listed[old], listed[new])
    return render(
        request,
        "plan.html",
        {
            "session": session,
            "plan": current,
            "decisions": {d["step_id"]: d for d in current.get("policy_decisions") or []},
            "versions": data.versions,
            "provenance": data.provenance,
            "diff": diff,
            "old": old,
            "new": new,
        },
    )
