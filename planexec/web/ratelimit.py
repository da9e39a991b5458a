"""Rate limits of both services: failed authentications per client, requests per tenant.

Two limits (OWASP API2 "auth failures rate-limited", API4 "rate limits"; RELIABILITY.md S2,
S4), both counted with the ``limits`` package in this process's memory:

- ``auth_failure_limit`` failed authentications per client address per
  ``auth_failure_window_s`` (moving window). Once a client has used them up, every request
  from it that presents a key (an ``X-API-Key`` or a console login) is refused with 429 before
  the key is looked at, valid or not, until the window has room again: a lockout that let a
  right guess through would not slow guessing. Users sharing the address (NAT, one proxy)
  share the lockout; routes without authentication (health, metrics) stay open. A missing
  key is not counted (it guesses nothing). The client address is the ASGI peer address; behind a
  proxy, run uvicorn with ``--proxy-headers`` and ``--forwarded-allow-ips`` so that it is the
  caller's, not the proxy's.
- ``tenant_rate_limit`` authenticated requests per tenant per ``tenant_rate_window_s``
  (sliding window counter). Keys with the ``planexec:dispatch`` scope are not counted, so the
  executor's claims and replans go on whatever a tenant does.

Both are per process: N replicas allow up to N times the configured numbers, and a restart
forgets the counts. Refusals are ``RateLimitedError`` (429 ``rate-limited``) naming the limit,
its value and window, with ``Retry-After`` in whole seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from starlette.requests import HTTPConnection

from planexec.errors import RateLimitedError
from planexec.settings import CommonSettings

_NAMESPACE = "planexec"


def client_address(connection: HTTPConnection) -> str:
    """The caller's address as the server sees it (``unknown`` when the server gives none)."""
    return connection.client.host if connection.client else "unknown"


@dataclass
class _Limit:
    name: str
    item: RateLimitItem
    limiter: RateLimiter

    def refusal(self, key: str, detail: str) -> RateLimitedError:
        stats = self.limiter.get_window_stats(self.item, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimitedError(
            detail,
            limit=self.name,
            limit_value=self.item.amount,
            window_s=self.item.get_expiry(),
            retry_after_s=retry_after,
        )


class AuthFailureLimiter:
    """Failed authentications per client address, in a moving window.

    Args:
        limit: failures allowed per window.
        window_s: the window, in whole seconds.

    """

    def __init__(self, limit: int, window_s: int) -> None:
        self._limit = _Limit(
            "auth_failure_limit",
            RateLimitItemPerSecond(limit, window_s, namespace=f"{_NAMESPACE}-auth"),
            MovingWindowRateLimiter(MemoryStorage()),
        )

    def check(self, client: str) -> None:
        """Refuse ``client`` while it has no failures left in the window.

        Raises:
            RateLimitedError: ``limit`` is ``auth_failure_limit``; ``Retry-After`` says when
                the oldest counted failure leaves the window.

        """
        if not self._limit.limiter.test(self._limit.item, client):
            raise self._limit.refusal(
                client,
                f"too many failed authentications from this client: at most "
                f"{self._limit.item.amount} per {self._limit.item.get_expiry()} s",
            )

    def failed(self, client: str) -> None:
        """Count one failed authentication of ``client``."""
        self._limit.limiter.hit(self._limit.item, client)


class TenantRateLimiter:
    """Requests per tenant, in a sliding window counter.

    Args:
        limit: requests allowed per window.
        window_s: the window, in whole seconds.

    """

    def __init__(self, limit: int, window_s: int) -> None:
        self._limit = _Limit(
            "tenant_rate_limit",
            RateLimitItemPerSecond(limit, window_s, namespace=f"{_NAMESPACE}-tenant"),
            SlidingWindowCounterRateLimiter(MemoryStorage()),
        )

    def hit(self, tenant: str) -> None:
        """Count one request of ``tenant``.

        Raises:
            RateLimitedError: ``limit`` is ``tenant_rate_limit`` when the tenant has used up
                the window (the refused request is not counted).

        """
        if not self._limit.limiter.hit(self._limit.item, tenant):
            raise self._limit.refusal(
                tenant,
                f"tenant {tenant} exceeded its request rate: at most "
                f"{self._limit.item.amount} per {self._limit.item.get_expiry()} s",
            )


@dataclass(frozen=True)
class RateLimits:
    """The limiters of one application (``app.state.rate_limits``); None = that limit is off."""

    auth_failures: AuthFailureLimiter | None
    tenant_requests: TenantRateLimiter | None

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> RateLimits:
        """Limiters configured by ``auth_failure_*`` and ``tenant_rate_*`` settings."""
        return cls(
            auth_failures=(
                AuthFailureLimiter(settings.auth_failure_limit, settings.auth_failure_window_s)
                if settings.auth_failure_limit is not None
                else None
            ),
            tenant_requests=(
                TenantRateLimiter(settings.tenant_rate_limit, settings.tenant_rate_window_s)
                if settings.tenant_rate_limit is not None
                else None
            ),
        )
