"""Request body limits and content-type enforcement, as pure ASGI middleware.

A body larger than ``max_body_bytes`` gets 413 before the application reads it when it
declares its ``Content-Length``, and as soon as the limit is crossed when it is streamed
(chunked): the middleware buffers at most that many bytes. A request with a body whose media
type is not JSON (``application/json`` or ``*/*+json``, RFC 6839) gets 415.

A JSON body within the size limit is then checked for its shape (OWASP API4, RELIABILITY.md
S4), so that no parser down the line meets a value that exhausts its stack or CPU: nested
deeper than ``max_body_depth``, an array or object of more than ``max_body_items`` items, or
a number literal longer than ``max_number_length`` characters (CPython refuses integers over
4300 digits with an error FastAPI turns into an untyped 400) gets 422 ``limit-exceeded``
naming the limit. A body that is not JSON at all passes on, for the application's own 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from planexec.errors import (
    LimitExceededError,
    PayloadTooLargeError,
    PlanexecError,
    UnsupportedMediaTypeError,
)

from .problems import problem_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


@dataclass(frozen=True)
class JsonShapeLimits:
    """Shape limits of a JSON request body (settings of the same names)."""

    max_body_depth: int = 64
    """Deepest nesting of arrays and objects: a scalar is 0, ``{}`` and ``[]`` are 1."""
    max_body_items: int = 10_000
    """Most items of one array, or members of one object."""
    max_number_length: int = 100
    """Longest number literal, in characters."""


class _NumberTooLongError(ValueError):
    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.length = len(literal)


def _shape_violation(body: bytes, limits: JsonShapeLimits) -> LimitExceededError | None:
    """The first limit ``body`` breaks, or None (also when it is not JSON at all)."""

    def number(literal: str) -> str:
        if len(literal) > limits.max_number_length:
            raise _NumberTooLongError(literal)
        return literal  # only the length matters here; the application parses it again

    try:
        value = json.loads(body, parse_int=number, parse_float=number)
    except RecursionError:
        return _too_deep(limits, "deeper than the parser's stack allows")
    except _NumberTooLongError as exc:
        return LimitExceededError(
            f"a number in the request body is {exc.length} characters long, over "
            f"{limits.max_number_length}",
            limit="max_number_length",
            limit_value=limits.max_number_length,
        )
    except ValueError:
        return None  # not JSON: the application answers 400 malformed-request
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:  # iterative, so a hostile value cannot exhaust the Python stack
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            if depth > limits.max_body_depth:
                return _too_deep(limits, f"at least {depth} deep")
            if len(node) > limits.max_body_items:
                return LimitExceededError(
                    f"an {'object' if isinstance(node, dict) else 'array'} in the request body "
                    f"has {len(node)} items, over {limits.max_body_items}",
                    limit="max_body_items",
                    limit_value=limits.max_body_items,
                )
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth) for child in children)
    return None


def _too_deep(limits: JsonShapeLimits, how: str) -> LimitExceededError:
    return LimitExceededError(
        f"the request body is nested {how}, over {limits.max_body_depth}",
        limit="max_body_depth",
        limit_value=limits.max_body_depth,
    )


class BodyLimitMiddleware:
    """Enforce ``max_body_bytes``, JSON request bodies and their shape; refusals are problems.

    Args:
        app: The wrapped ASGI application.
        max_body_bytes: Largest body, in bytes (413 ``payload-too-large`` above it).
        shape: Nesting, item-count and number-length limits of JSON bodies (422
            ``limit-exceeded``).

    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, shape: JsonShapeLimits | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.shape = shape or JsonShapeLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        has_body = (length is not None and length.strip() != "0") or "transfer-encoding" in headers
        error: PlanexecError | None = None
        if length is not None and (not length.strip().isdigit()):
            error = PayloadTooLargeError("Content-Length is not a number", limit="max_body_bytes")
        elif length is not None and int(length) > self.max_body_bytes:
            error = self._too_large()
        elif has_body and not _is_json(headers.get("content-type", "")):
            got = headers.get("content-type") or "none"
            error = UnsupportedMediaTypeError(f"request bodies must be application/json, got {got}")
        if error is not None:
            await problem_response(error, scope.get("path"))(scope, receive, send)
            return

        # Buffer the body (at most max_body_bytes) so that an over-long streamed body is refused
        # here, before the application sees a byte of it.
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                await problem_response(self._too_large(), scope.get("path"))(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        violation = _shape_violation(body, self.shape) if body.strip() else None
        if violation is not None:
            await problem_response(violation, scope.get("path"))(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body exceeds the limit of {self.max_body_bytes} bytes",
            limit="max_body_bytes",
            limit_value=self.max_body_bytes,
        )
