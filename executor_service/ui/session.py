"""Console sessions: the user's API key in a signed cookie, and CSRF tokens bound to it.

The session cookie holds ``{sid, key}`` signed (HMAC-SHA256, itsdangerous) with the signing
key under its own salt; it is ``HttpOnly``, ``SameSite=Strict``, ``Path=/ui`` and ``Secure``
when the request came over https. The key is checked against the key store on every request,
so a revoked key ends its sessions within the store's cache time.

A CSRF token is the HMAC of the session id (another salt): a form rendered for one session
is refused in any other. The login form, which has no session yet, is bound the same way to
a short-lived pre-session cookie.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from shared_schemas import Principal, Role

SESSION_COOKIE = "planexec_ui"
"""Name of the session cookie."""
LOGIN_COOKIE = "planexec_ui_login"
"""Name of the pre-session cookie the login form's CSRF token is bound to."""
COOKIE_PATH = "/ui"
"""Cookies are sent to the console only, never to the JSON APIs."""
SESSION_TTL_S = 12 * 3600
"""Life of a session, in seconds; then the user pastes the key again."""
LOGIN_TTL_S = 3600
"""Life of a login form, in seconds."""
CSRF_FIELD = "csrf_token"
"""Name of the hidden form field that carries the CSRF token."""
CSRF_HEADER = "X-CSRF-Token"
"""Header that may carry the token instead (htmx requests)."""


class LoginRequiredError(Exception):
    """No valid session: the console sends the browser to the login page."""


@dataclass(frozen=True)
class Session:
    """A logged-in console user."""

    principal: Principal
    """Who the session's API key belongs to (tenant, subject, roles)."""
    api_key: str = field(repr=False)
    """The key itself: sent to the planner on the user's behalf, never rendered."""
    sid: str = field(repr=False)
    """Random session id the CSRF token is bound to."""
    csrf_token: str = field(repr=False)
    """The token every state-changing form of this session carries."""

    def can(self, role: Role) -> bool:
        """True when the principal holds ``role`` (or ``admin``)."""
        return self.principal.has_role(role)


class SessionCodec:
    """Signs and opens session cookies and CSRF tokens with one secret.

    Args:
        secret: the service's signing key (bytes); each use has its own salt.
        session_ttl_s: how long a session cookie is accepted, in seconds.
    """

    def __init__(self, secret: bytes, *, session_ttl_s: int = SESSION_TTL_S) -> None:
        kwargs: dict[str, Any] = {"signer_kwargs": {"digest_method": hashlib.sha256}}
        self._session = URLSafeTimedSerializer(secret, salt="planexec.ui.session", **kwargs)
        self._login = URLSafeTimedSerializer(secret, salt="planexec.ui.login", **kwargs)
        self._csrf = Signer(secret, salt="planexec.ui.csrf", digest_method=hashlib.sha256)
        self._ttl_s = session_ttl_s

    def issue(self, api_key: str) -> tuple[str, str]:
        """A new session for ``api_key``: ``(cookie value, session id)``."""
        sid = secrets.token_urlsafe(16)
        return self._session.dumps({"sid": sid, "key": api_key}), sid

    def open(self, cookie: str) -> tuple[str, str] | None:
        """``(session id, api key)`` of a cookie; None when forged, altered or expired."""
        try:
            data = self._session.loads(cookie, max_age=self._ttl_s)
        except BadSignature:  # SignatureExpired is a BadSignature
            return None
        if not isinstance(data, dict):
            return None
        sid, key = data.get("sid"), data.get("key")
        if not isinstance(sid, str) or not isinstance(key, str):
            return None
        return sid, key

    def issue_login(self) -> tuple[str, str]:
        """A pre-session for the login form: ``(cookie value, nonce)``."""
        nonce = secrets.token_urlsafe(16)
        return self._login.dumps(nonce), nonce

    def open_login(self, cookie: str) -> str | None:
        """The nonce of a pre-session cookie; None when forged or older than an hour."""
        try:
            nonce = self._login.loads(cookie, max_age=LOGIN_TTL_S)
        except BadSignature:
            return None
        return nonce if isinstance(nonce, str) else None

    def csrf_token(self, sid: str) -> str:
        """The CSRF token of session (or pre-session) ``sid``."""
        return self._csrf.get_signature(sid).decode()

    def csrf_valid(self, sid: str, token: str) -> bool:
        """True when ``token`` is the CSRF token of ``sid`` (constant-time comparison)."""
        return self._csrf.verify_signature(sid.encode(), token.encode())


def codec_for(request: Request) -> SessionCodec:
    """The codec of this app, keyed by the executor's signing key."""
    secret: bytes = request.app.state.settings.signing_key_bytes
    return SessionCodec(secret)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age_s: int) -> None:
    """Set a console cookie: HttpOnly, SameSite=Strict, Path=/ui, Secure over https."""
    response.set_cookie(
        name,
        value,
        max_age=max_age_s,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    """Delete a console cookie (same attributes, so the browser matches it)."""
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
