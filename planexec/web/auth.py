"""FastAPI dependencies that authenticate the ``X-API-Key`` header and check roles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from planexec.auth import ApiKeyStore
from planexec.errors import AuthenticationRequiredError, ForbiddenError
from shared_schemas import Principal, Role

from .ratelimit import RateLimits, client_address

DISPATCH_SCOPE = "planexec:dispatch"
"""Scope of the executor's service key: claim dispatched plans and read any tenant's plans."""


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="A planexec API key")


def _rate_limits(connection: HTTPConnection) -> RateLimits | None:
    limits: RateLimits | None = getattr(connection.app.state, "rate_limits", None)
    return limits


async def verify_key(connection: HTTPConnection, api_key: str) -> Principal | None:
    """The principal of a presented key, under the failed-authentication limit.

    A malformed, unknown, wrong or revoked key counts one failure against the caller's address
    (``auth_failure_limit`` per ``auth_failure_window_s``, see ``planexec.web.ratelimit``);
    used by the ``X-API-Key`` dependency and by the console's login.

    Returns:
        The principal, or None when the key is not valid.

    Raises:
        RateLimitedError: the caller's address has used up its failures; the key is not
            checked at all while that lasts.

    """
    limits = _rate_limits(connection)
    failures = limits.auth_failures if limits is not None else None
    client = client_address(connection)
    if failures is not None:
        failures.check(client)
    store: ApiKeyStore = connection.app.state.key_store
    principal = await store.authenticate(api_key)
    if principal is None and failures is not None:
        failures.failed(client)
    return principal


async def authenticate(
    request: Request, api_key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    """Resolve the caller's ``Principal`` from ``X-API-Key``, then count the tenant's request.

    Raises:
        AuthenticationRequiredError: when the header is missing, malformed, unknown or revoked
            (keys do not expire; revocation is the way to end one).
        RateLimitedError: the caller's address is locked out after failed authentications
            (``auth_failure_limit``), or the tenant has used up ``tenant_rate_limit``; keys
            with the ``planexec:dispatch`` scope are not counted against the tenant.

    """
    if not api_key:
        raise AuthenticationRequiredError("missing X-API-Key header")
    principal = await verify_key(request, api_key)
    if principal is None:
        raise AuthenticationRequiredError("the API key is not valid")
    limits = _rate_limits(request)
    if (
        limits is not None
        and limits.tenant_requests is not None
        and DISPATCH_SCOPE not in principal.scopes
    ):
        limits.tenant_requests.hit(principal.tenant)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
"""The authenticated caller; declaring it makes a route require a valid key."""


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that requires ``scope`` on the authenticated caller's key.

    Raises:
        ForbiddenError: when the key lacks the scope.
    """

    async def check(principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            raise ForbiddenError(f"the {scope} scope is required")
        return principal

    return check


def require_role(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that requires ``role`` (or ``admin``) of the authenticated caller.

    Raises:
        ForbiddenError: when the principal lacks the role.

    """

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.has_role(role):
            raise ForbiddenError(f"the {role.value} role is required")
        return principal

    return check


def require_any_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that requires one of ``roles`` (or ``admin``) of the authenticated caller.

    Raises:
        ForbiddenError: when the principal holds none of them.

    """
    names = " or ".join(role.value for role in roles)

    async def check(principal: PrincipalDep) -> Principal:
        if not any(principal.has_role(role) for role in roles):
            raise ForbiddenError(f"the {names} role is required")
        return principal

    return check
