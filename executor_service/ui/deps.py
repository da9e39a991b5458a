"""Request plumbing of the console: the session dependency, CSRF checks, the route class.

Pages need a session (else a redirect to ``/ui/login``). The console's forms post JSON (htmx
with its ``json-enc`` extension: the services accept only JSON bodies); every POST needs the
CSRF token of its session (else 403 problem+json). Errors a person can act on (not found,
conflict, plan refused, planner unavailable, a bad form value) are rendered as HTML (a page,
or for htmx a fragment it shows in the page's ``#flash``) with their status; the rest keep
the service's problem+json handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from planexec.auth import ApiKeyStore
from planexec.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PlanexecError,
    PlanRefusedError,
    RequestValidationFailedError,
    ServiceUnavailableError,
)
from shared_schemas import Role

from .session import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginRequiredError,
    Session,
    codec_for,
)
from .templating import TEMPLATES

SECURITY_HEADERS: Mapping[str, str] = {
    # Scripts, styles and event streams come from this origin only; no inline script runs.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none';"
        " object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Headers on every console response."""

_SHOWN_AS_PAGES = (
    NotFoundError,
    ConflictError,
    PlanRefusedError,
    ServiceUnavailableError,
    RequestValidationFailedError,
)


async def current_session(request: Request) -> Session:
    """The logged-in user of this request.

    Raises:
        LoginRequiredError: no session cookie, a forged or expired one, or a revoked key.
    """
    cookie = request.cookies.get(SESSION_COOKIE)
    codec = codec_for(request)
    opened = codec.open(cookie) if cookie else None
    if opened is None:
        raise LoginRequiredError
    sid, api_key = opened
    store: ApiKeyStore = request.app.state.key_store
    principal = await store.authenticate(api_key)
    if principal is None:
        raise LoginRequiredError
    session = Session(principal, api_key, sid, codec.csrf_token(sid))
    request.state.principal = principal
    request.state.ui_session = session
    return session


SessionDep = Annotated[Session, Depends(current_session)]
"""A page's logged-in user."""


class ConsoleForm(BaseModel):
    """A console form as htmx's ``json-enc`` posts it: every field a string."""

    model_config = ConfigDict(extra="ignore")

    csrf_token: str = Field(default="", max_length=256)
    """The session's CSRF token (checked by ``form_session``, not by this model)."""


async def posted_token(request: Request) -> str | None:
    """The CSRF token of a request: ``X-CSRF-Token``, else the JSON body's ``csrf_token``."""
    token = request.headers.get(CSRF_HEADER)
    if token is not None:
        return token
    try:
        data = await request.json()  # the body is cached: the route's model reads it too
    except ValueError:
        return None
    value = data.get(CSRF_FIELD) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


async def form_session(request: Request, session: SessionDep) -> Session:
    """The logged-in user of a state-changing request whose CSRF token is valid.

    Raises:
        ForbiddenError: the form's ``csrf_token`` (or ``X-CSRF-Token``) is missing or is not
            this session's.
    """
    token = await posted_token(request)
    if token is None or not codec_for(request).csrf_valid(session.sid, token):
        raise ForbiddenError("the form's CSRF token is missing or is not this session's")
    return session


FormSessionDep = Annotated[Session, Depends(form_session)]
"""The user of a POST, CSRF-checked."""


def require(session: Session, role: Role) -> None:
    """Check that the session's principal holds ``role``.

    Raises:
        ForbiddenError: when it does not.
    """
    if not session.can(role):
        raise ForbiddenError(f"the {role.value} role is required")


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render template ``name`` as a page."""
    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request, name, context, status_code=status_code
    )
    return response


def is_htmx(request: Request) -> bool:
    """True for a request htmx made (``HX-Request: true``)."""
    return request.headers.get("HX-Request") == "true"


def go_to(request: Request, url: str) -> Response:
    """After a form: htmx navigates to ``url`` (``HX-Redirect``), other clients get a 303."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _login_redirect(request: Request) -> Response:
    target = "/ui/login"
    if request.method == "GET" and request.url.path != "/ui/":
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target += "?next=" + quote(path, safe="")
    return go_to(request, target)


def _error_page(request: Request, exc: PlanexecError) -> Response:
    session = getattr(request.state, "ui_session", None)
    return render(
        request,
        "_flash.html" if is_htmx(request) else "error.html",
        {"session": session, "status": exc.status, "title": exc.title, "detail": exc.detail},
        status_code=exc.status,
    )


class UiRoute(APIRoute):
    """A console route: login redirects, HTML error pages and security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler (the documented custom ``APIRoute`` pattern)."""
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequiredError:
                response = _login_redirect(request)
            except _SHOWN_AS_PAGES as exc:
                response = _error_page(request, exc)
            response.headers.update(SECURITY_HEADERS)
            return response

        return console_handler
