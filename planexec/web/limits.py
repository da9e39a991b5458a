"""Request body limits and content-type enforcement, as pure ASGI middleware.

A body larger than ``max_body_bytes`` gets 413 before the application reads it when it
declares its ``Content-Length``, and as soon as the limit is crossed when it is streamed
(chunked): the middleware buffers at most that many bytes. A request with a body whose media
type is not JSON (``application/json`` or ``*/*+json``, RFC 6839) gets 415.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from planexec.errors import PayloadTooLargeError, PlanexecError, UnsupportedMediaTypeError

from .problems import problem_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class BodyLimitMiddleware:
    """Enforce ``max_body_bytes`` and JSON request bodies; render refusals as problem+json."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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
