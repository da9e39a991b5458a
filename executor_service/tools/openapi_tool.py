"""An imported OpenAPI operation as a ``ToolAdapter``: ``OpenApiTool`` (DESIGN §3).

``import_openapi`` (in ``openapi_import``) reads the document and builds one ``OpenApiTool`` per
operation; this module only sends a call and classifies its response, with the rules shared by
the HTTP tools (``http_errors``). Args are untrusted: a path argument cannot change the path and
a header argument cannot add a header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2

from shared_schemas import ToolSpec

from .base import InvocationContext, ToolError, ToolResult
from .http_errors import http_status_error, read_body, request_error
from .netguard import BlockedTargetError


@dataclass(frozen=True)
class Parameter:
    """One operation parameter, as ``OpenApiTool`` sends it."""

    name: str
    location: str
    """``path``, ``query`` or ``header``."""
    required: bool
    explode: bool
    """Query arrays: repeat the name per item (``form`` style, the default) or join with ``,``."""


class OpenApiTool:
    """One imported operation (a ``ToolAdapter``).

    ``invoke`` fills the path template with percent-encoded args (``/`` included, and a value of
    ``.`` or ``..`` refused, so an arg cannot change the path), adds query and header args, sends
    the ``body`` arg as JSON, and sends ``Idempotency-Key`` (and ``traceparent``). Redirects are
    not followed. Output: the parsed JSON body, or ``{"text": ...}`` for a non-JSON response.

    Errors (``ToolError.code``): ``invalid_args``, ``blocked_target``, ``response_too_large``,
    ``invalid_response`` (a JSON content type with a body that is not JSON), ``http_redirect`` and
    ``http_4xx`` (not retryable; ``details.status``), ``http_retryable`` for 408, 429 and 5xx
    (``retry_after_s`` from ``Retry-After``), ``timeout`` and ``connection_error`` (retryable).
    """

    def __init__(
        self,
        spec: ToolSpec,
        *,
        method: str,
        path: str,
        parameters: list[Parameter],
        has_body: bool,
        base_url: str,
        client: httpx2.AsyncClient,
        max_response_bytes: int,
    ) -> None:
        """Build the adapter; see ``import_openapi`` for the arguments."""
        self._spec = spec
        self._method = method
        self._path = path
        self._parameters = parameters
        self._has_body = has_body
        self._base_url = base_url.rstrip("/")
        self._client = client
        self._max_response_bytes = max_response_bytes

    @property
    def spec(self) -> ToolSpec:
        """The tool's catalog entry."""
        return self._spec

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Send the operation's request and classify the response.

        Raises:
            ToolError: See the class docstring for the codes.
        """
        request = self._request(args, ctx)
        try:
            response = await self._client.send(request, stream=True, follow_redirects=False)
            try:
                return await self._result(response, ctx)
            finally:
                await response.aclose()
        except (BlockedTargetError, httpx2.DecodingError, httpx2.TransportError) as exc:
            raise request_error(exc) from exc

    def _request(self, args: dict[str, Any], ctx: InvocationContext) -> httpx2.Request:
        path = self._path
        query: list[tuple[str, str | int | float | bool | None]] = []
        headers = {"Accept": "application/json", "Idempotency-Key": ctx.idempotency_key}
        if ctx.traceparent:
            headers["traceparent"] = ctx.traceparent  # W3C Trace Context
        for param in self._parameters:
            if param.name not in args:
                if param.required:
                    raise _invalid(f"missing required {param.location} parameter {param.name!r}")
                continue
            values = _strings(param.name, args[param.name])
            if param.location == "path":
                if any(v in {".", ".."} for v in values):
                    raise _invalid(f"path parameter {param.name!r} may not be '.' or '..'")
                segment = ",".join(quote(v, safe="") for v in values)
                path = path.replace("{" + param.name + "}", segment)
            elif param.location == "query":
                pairs = [(param.name, v) for v in values]
                query += pairs if param.explode else [(param.name, ",".join(values))]
            elif any(c in value for value in values for c in "\r\n\x00"):
                raise _invalid(f"header parameter {param.name!r} may not contain CR, LF or NUL")
            else:
                headers[param.name] = ",".join(values)
        content: bytes | None = None
        if self._has_body and "body" in args:
            content = json.dumps(args["body"], separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        return self._client.build_request(
            self._method,
            self._base_url + path,
            params=query,
            headers=headers,
            content=content,
            timeout=ctx.timeout_s,
        )

    async def _result(self, response: httpx2.Response, ctx: InvocationContext) -> ToolResult:
        status = response.status_code
        failed = status >= 300  # redirects are not followed, so a 3xx is a failure too
        body = await read_body(
            response, max_bytes=self._max_response_bytes, attempt=ctx.attempt, excerpt=failed
        )
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if failed:
            raise http_status_error(response, text, attempt=ctx.attempt)
        usage = {"bytes": len(body), "status": status}
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if (content_type == "application/json" or content_type.endswith("+json")) and body:
            try:
                return ToolResult(output=json.loads(body), usage=usage)
            except (ValueError, RecursionError) as exc:  # nesting too deep for the parser too
                message = f"{content_type} response is not JSON"
                raise ToolError(message, retryable=False, code="invalid_response") from exc
        return ToolResult(output={"text": text}, usage=usage)


def _invalid(message: str) -> ToolError:
    return ToolError(message, retryable=False, code="invalid_args")


def _strings(name: str, value: Any) -> list[str]:
    """A parameter value as strings: scalars as one, arrays of scalars as one per item."""
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, int | float | str):
            out.append(str(item))
        else:
            raise _invalid(f"parameter {name!r} must be a scalar or an array of scalars")
    return out
