"""The approvals inbox: gates waiting in the user's tenant, and the approve/reject form."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from pydantic import Field, ValidationError

from planexec.errors import RequestValidationFailedError
from shared_schemas import Role

from ..api import runs as runs_api
from ..api.models import ApprovalRequest
from .deps import ConsoleForm, FormSessionDep, SessionDep, UiRoute, go_to, render, require
from .queries import ConsoleQueries
from .run_routes import parse_uuid

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)

NOTICES = {
    "approve": "Approved: the step runs with exactly the arguments shown.",
    "reject": "Rejected: the step failed and its on_failure applies.",
    "stands": "An earlier decision on this step stands; nothing was changed.",
}
"""Fixed texts a redirect may ask for with ``?notice=``."""


class DecisionForm(ConsoleForm):
    """The approve/reject form of a gate."""

    decision: str = Field(default="", max_length=16)
    args_hash: str = Field(default="", max_length=80)
    """The hash of the arguments the form showed: the decision is bound to them."""
    comment: str = Field(default="", max_length=2000)


@router.get("/approvals")
async def approvals_page(request: Request, session: SessionDep, notice: str = "") -> Response:
    """Gates waiting for a decision in the user's tenant, soonest deadline first."""
    gates = await ConsoleQueries(request.app.state.engine).open_gates(session.principal.tenant)
    return render(
        request,
        "approvals.html",
        {
            "session": session,
            "gates": gates,
            "can_decide": session.can(Role.APPROVER),
            "notice": NOTICES.get(notice),
            "now": datetime.now(UTC),
        },
    )


@router.post("/approvals/{run_id}/{step_id}")
async def decide(
    request: Request,
    session: FormSessionDep,
    run_id: str,
    step_id: str,
    form: DecisionForm,
) -> Response:
    """Approve or reject a gated step, bound to the ``args_hash`` of the arguments shown.

    A gate that now shows other arguments, has expired or was decided meanwhile is a 409
    page that says so.
    """
    require(session, Role.APPROVER)
    try:
        body = ApprovalRequest.model_validate(
            {
                "decision": form.decision,
                "comment": form.comment or None,
                "args_hash": form.args_hash or None,
            }
        )
    except ValidationError as exc:
        raise RequestValidationFailedError("decision: approve or reject") from exc
    recorded = await runs_api.decide_approval(
        request, session.principal, parse_uuid(run_id), step_id, body
    )
    notice = body.decision if recorded.recorded else "stands"
    return go_to(request, f"/ui/approvals?notice={notice}")
