"""Login and logout: paste an API key, get a session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import Field

from planexec.errors import ForbiddenError
from planexec.web.auth import verify_key

from .deps import ConsoleForm, FormSessionDep, UiRoute, current_session, go_to, render
from .session import (
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_COOKIE,
    SESSION_TTL_S,
    LoginRequiredError,
    clear_cookie,
    codec_for,
    set_cookie,
)

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)

HOME = "/ui/runs"


class LoginForm(ConsoleForm):
    """The login form."""

    api_key: str = Field(default="", max_length=512)
    next: str = Field(default=HOME, max_length=2048)
    """Where to go once logged in (a console path)."""


def safe_next(value: str | None) -> str:
    """Where to go after login: a console path, never another origin (else the runs list)."""
    if (
        value
        and value.startswith("/ui/")
        and not value.startswith("//")
        and "\\" not in value
        and value.isprintable()
    ):
        return value
    return HOME


def _login_page(request: Request, next_url: str) -> Response:
    codec = codec_for(request)
    cookie, nonce = codec.issue_login()
    response = render(
        request,
        "login.html",
        {"session": None, "csrf_token": codec.csrf_token(nonce), "next_url": next_url},
    )
    set_cookie(request, response, LOGIN_COOKIE, cookie, LOGIN_TTL_S)
    return response


@router.get("/")
async def home() -> RedirectResponse:
    """The console's start page is the runs list."""
    return RedirectResponse(HOME, status_code=303)


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The login form (a logged-in user goes straight on)."""
    try:
        await current_session(request)
    except LoginRequiredError:
        return _login_page(request, safe_next(next))
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/login")
async def login(request: Request, form: LoginForm) -> Response:
    """Check the pasted key against the key store and open a session.

    A key the store does not know is a 401 that says so (the form stays usable) and counts
    against the caller's ``auth_failure_limit``, like a bad ``X-API-Key``.

    Raises:
        ForbiddenError: the form's CSRF token does not match its pre-session cookie.
        RateLimitedError: the caller's address used up its failed authentications (429,
            ``Retry-After``); the key is not checked.
    """
    codec = codec_for(request)
    pre = request.cookies.get(LOGIN_COOKIE)
    nonce = codec.open_login(pre) if pre else None
    if nonce is None or not codec.csrf_valid(nonce, form.csrf_token):
        raise ForbiddenError("the login form's CSRF token is missing, expired or not this form's")
    api_key = form.api_key.strip()
    principal = await verify_key(request, api_key) if api_key else None
    if principal is None:
        context = {"session": None, "status": 401, "title": "Not logged in"}
        context["detail"] = "That API key is not valid."
        return render(request, "_flash.html", context, status_code=401)
    cookie, _sid = codec.issue(api_key)
    response = go_to(request, safe_next(form.next))
    set_cookie(request, response, SESSION_COOKIE, cookie, SESSION_TTL_S)
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, session: FormSessionDep) -> Response:
    """End the session in this browser (the key itself stays valid)."""
    response = go_to(request, "/ui/login")
    clear_cookie(request, response, SESSION_COOKIE)
    return response
