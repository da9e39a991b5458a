"""Console sessions: signed cookies, CSRF tokens bound to one session, safe redirects."""

from __future__ import annotations

import pytest

from executor_service.ui.auth_routes import HOME, safe_next
from executor_service.ui.session import SessionCodec

SECRET = b"k" * 40


def test_a_session_cookie_opens_to_its_key_and_nothing_else_opens() -> None:
    codec = SessionCodec(SECRET)
    cookie, sid = codec.issue("pxk_abc_secret")
    assert codec.open(cookie) == (sid, "pxk_abc_secret")
    assert "pxk_abc_secret" not in cookie  # encoded and signed, not a bare key
    assert codec.open(cookie[:-2] + ("aa" if not cookie.endswith("aa") else "bb")) is None
    assert SessionCodec(b"x" * 40).open(cookie) is None  # another service's key
    assert codec.open("not a cookie") is None
    assert codec.open_login(cookie) is None  # a session cookie is no login cookie (salt)


def test_an_expired_session_is_no_session() -> None:
    cookie, _ = SessionCodec(SECRET).issue("k")
    assert SessionCodec(SECRET, session_ttl_s=-1).open(cookie) is None


def test_a_csrf_token_is_valid_for_its_own_session_only() -> None:
    codec = SessionCodec(SECRET)
    _, sid = codec.issue("k")
    _, other = codec.issue("k")
    token = codec.csrf_token(sid)
    assert codec.csrf_valid(sid, token)
    assert not codec.csrf_valid(other, token)
    assert not codec.csrf_valid(sid, codec.csrf_token(other))
    assert not codec.csrf_valid(sid, "")
    assert not SessionCodec(b"x" * 40).csrf_valid(sid, token)


def test_the_login_form_is_bound_to_its_pre_session() -> None:
    codec = SessionCodec(SECRET)
    cookie, nonce = codec.issue_login()
    assert codec.open_login(cookie) == nonce
    assert codec.csrf_valid(nonce, codec.csrf_token(nonce))
    assert codec.open(cookie) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/ui/approvals", "/ui/approvals"),
        ("/ui/runs?status=failed&plan=x", "/ui/runs?status=failed&plan=x"),
        ("//evil.test/ui/", HOME),
        ("https://evil.test/ui/", HOME),
        ("/ui\\..\\evil", HOME),
        ("/v1/runs", HOME),
        ("/ui/\nSet-Cookie:x", HOME),
        (None, HOME),
        ("", HOME),
    ],
)
def test_after_login_the_console_only_goes_to_its_own_pages(
    value: str | None, expected: str
) -> None:
    assert safe_next(value) == expected
