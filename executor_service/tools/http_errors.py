"""How the HTTP tools read a response and turn failures into ``ToolError``s (DESIGN §6).

Shared by ``http.request`` and the tools imported from OpenAPI, so that both retry the same
statuses, honour ``Retry-After`` the same way and cap bodies the same way:

* HTTP 408, 429 and 5xx are ``http_retryable`` (retryable, ``retry_after_s`` from
  ``Retry-After``, RFC 9110 §10.2.3); other 4xx are ``http_4xx``; a 3xx given to
  ``http_status_error`` is ``http_redirect``. None of them is retryable but the first.
* Bodies are streamed and cut at a size cap (``response_too_large``); an error body is cut to
  ``ERROR_EXCERPT_BYTES`` and kept as ``details.body_excerpt``.
* A URL or address refused by the network policy is ``blocked_target``; a timeout is
  ``timeout`` and a connection failure ``connection_error`` (both retryable); a body that does
  not decode as its ``Content-Encoding`` says is ``bad_response``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2

from .base import ToolError
from .netguard import BlockedTargetError

ERROR_EXCERPT_BYTES = 2048
"""Most bytes of an error response's body kept (``details.body_excerpt``)."""
RETRYABLE_STATUSES = frozenset({408, 429})
"""4xx statuses worth retrying (Request Timeout, Too Many Requests); every 5xx is too."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a ``Retry-After`` value (RFC 9110 §10.2.3) as seconds from ``now``.

    The value is either whole seconds (``1*DIGIT``, ASCII digits only) or an HTTP-date; a date
    in the past gives 0.

    Args:
        value: Delay in whole seconds (``"3"``) or an HTTP-date; ``None`` when absent.
        now: Current time (UTC) for the HTTP-date form; the system clock by default.

    Returns:
        Seconds to wait, at least 0, or ``None`` when absent or neither form.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP error status may succeed later: 408, 429 or any 5xx (RFC 9110 §15)."""
    return status in RETRYABLE_STATUSES or status >= 500


def http_status_error(response: httpx2.Response, excerpt: str, *, attempt: int) -> ToolError:
    """Classify a response whose status (>= 300) is a failure.

    Args:
        response: The response; only its status, URL and headers are read.
        excerpt: The start of its body as text (see ``read_body``), kept in ``details``.
        attempt: The attempt number, kept in ``details``.

    Returns:
        ``http_retryable`` (408, 429, 5xx; retryable, ``retry_after_s`` from ``Retry-After``),
        ``http_4xx`` (other 4xx) or ``http_redirect`` (3xx, for a caller that does not follow
        redirects; ``details.location``). ``details``: ``{status, url, body_excerpt,
        attempt}``.
    """
    status = response.status_code
    details: dict[str, Any] = {
        "status": status,
        "url": str(response.url),
        "body_excerpt": excerpt,
        "attempt": attempt,
    }
    if status < 400:
        details["location"] = response.headers.get("location", "")
        return ToolError(
            f"HTTP {status} redirect not followed",
            retryable=False,
            code="http_redirect",
            details=details,
        )
    retryable = is_retryable_status(status)
    return ToolError(
        f"HTTP {status} from {response.url}",
        retryable=retryable,
        code="http_retryable" if retryable else "http_4xx",
        retry_after_s=parse_retry_after(response.headers.get("retry-after")) if retryable else None,
        details=details,
    )


async def read_body(
    response: httpx2.Response, *, max_bytes: int, attempt: int, excerpt: bool = False
) -> bytes:
    """Read a streamed response body, refusing one larger than ``max_bytes``.

    A declared ``Content-Length`` over the cap is refused before anything is read (except for
    a HEAD, whose length describes a body that is not sent).

    Args:
        response: A response opened with ``stream=True``; the caller closes it.
        max_bytes: Largest body accepted, in bytes.
        attempt: The attempt number, kept in the error's ``details``.
        excerpt: Read an error body instead: keep its first ``ERROR_EXCERPT_BYTES`` and stop,
            never refuse.

    Returns:
        The body, at most ``max_bytes`` (``ERROR_EXCERPT_BYTES`` for an excerpt) bytes.

    Raises:
        ToolError: ``response_too_large`` (not retryable; ``details``: ``{url, limit_bytes,
            seen_bytes, attempt}``).
    """
    cap = ERROR_EXCERPT_BYTES if excerpt else max_bytes
    declared = response.headers.get("content-length", "")
    too_long = declared.isdigit() and int(declared) > cap
    if not excerpt and too_long and response.request.method != "HEAD":
        raise _too_large(response, max_bytes, int(declared), attempt)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            if excerpt:
                break  # an excerpt is enough to report the error
            raise _too_large(response, max_bytes, size, attempt)
    return b"".join(chunks)[:cap]


def _too_large(response: httpx2.Response, limit: int, seen: int, attempt: int) -> ToolError:
    return ToolError(
        f"response larger than {limit} bytes",
        retryable=False,
        code="response_too_large",
        details={
            "url": str(response.url),
            "limit_bytes": limit,
            "seen_bytes": seen,
            "attempt": attempt,
        },
    )


def request_error(exc: BlockedTargetError | httpx2.RequestError) -> ToolError:
    """Turn a refused target or a failed exchange into a ``ToolError``.

    Returns:
        ``blocked_target`` (not retryable; ``details``: ``{reason, target}``) for a
        ``BlockedTargetError``, ``bad_response`` (not retryable) for a body that does not
        decode, ``timeout`` for a timeout and ``connection_error`` for any other failure (both
        retryable).
    """
    if isinstance(exc, BlockedTargetError):
        return ToolError(
            str(exc),
            retryable=False,
            code="blocked_target",
            details={"reason": exc.reason, "target": exc.target},
        )
    if isinstance(exc, httpx2.DecodingError):  # e.g. a body that is not the gzip it claims
        return ToolError(f"undecodable response: {exc!r}", retryable=False, code="bad_response")
    if isinstance(exc, httpx2.TimeoutException):
        return ToolError(f"timed out: {exc!r}", retryable=True, code="timeout")
    return ToolError(f"connection failed: {exc!r}", retryable=True, code="connection_error")
