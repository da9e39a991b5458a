"""FastAPI dependencies that authenticate the ``X-API-Key`` header and check roles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from planexec.auth import ApiKeyStore
from planexec.errors import AuthenticationRequiredError, ForbiddenError
from shared_schemas import Principal, Role

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="A planexec API key")


async def authenticate(
    request: Request, api_key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    """Resolve the caller's ``Principal`` from ``X-API-Key``.

    Raises:
        AuthenticationRequiredError: when the header is missing, malformed, unknown or revoked.

    """
    if not api_key:
        raise AuthenticationRequiredError("missing X-API-Key header")
    store: ApiKeyStore = request.app.state.key_store
    principal = await store.authenticate(api_key)
    if principal is None:
        raise AuthenticationRequiredError("the API key is not valid")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
"""The authenticated caller; declaring it makes a route require a valid key."""


DISPATCH_SCOPE = "planexec:dispatch"
"""Scope of the executor's service key: claim dispatched plans and read any tenant's plans."""


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
