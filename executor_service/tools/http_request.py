"""The built-in ``http.request`` tool: one HTTP call under the outbound network policy.

Every hop (the first request and each redirect) is checked by ``NetPolicy.check_url`` before
it is sent, and every connection by ``GuardedNetworkBackend`` on the resolved address (issue 5,
RELIABILITY S7, DESIGN §8). Response bodies are streamed and cut off at a size cap; statuses
and failures are classified by ``http_errors``, as for the tools imported from OpenAPI.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

from shared_schemas import SideEffect, ToolSpec

from .base import InvocationContext, ToolError, ToolResult
from .http_errors import http_status_error, read_body, request_error
from .netguard import BlockedTargetError, NetPolicy, make_guarded_client

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""RFC 9110 §7.6.1 connection-specific fields, dropped from caller headers."""
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
"""Dropped when a redirect leaves the original origin (as browsers and httpx do)."""

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "method": {"enum": list(METHODS), "default": "GET"},
        "url": {"type": "string", "format": "uri", "maxLength": 8192},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "query": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "json": {},
        "body": {"type": "string"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
    },
    "required": ["url"],
    "additionalProperties": False,
    "not": {"required": ["json", "body"]},
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "integer", "examples": [200]},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "json": {},
        "text": {"type": "string"},
        "url": {"type": "string"},
    },
    "required": ["status", "headers", "url"],
}


def _request_headers(args: dict[str, Any], ctx: InvocationContext) -> dict[str, str]:
    headers: dict[str, str] = {}
    supplied: dict[str, str] = args.get("headers") or {}
    named_by_connection = {
        token.strip().lower()
        for name, value in supplied.items()
        if name.lower() == "connection"
        for token in value.split(",")
    }
    for name, value in supplied.items():
        lowered = name.lower()
        if lowered == "host":  # the URL names the target; a Host override would bypass checks
            raise ToolError("a Host header may not be set", retryable=False, code="invalid_args")
        if lowered in HOP_BY_HOP_HEADERS or lowered in named_by_connection:
            continue
        if lowered in {"content-length", "idempotency-key", "traceparent"}:
            continue  # computed by the client or owned by the executor
        headers[name] = value
    # draft-ietf-httpapi-idempotency-key-header; sent on every method, harmless on GET.
    headers["Idempotency-Key"] = ctx.idempotency_key
    if ctx.traceparent:
        headers["traceparent"] = ctx.traceparent  # W3C Trace Context
    return headers


class HttpRequestTool:
    """The ``http.request`` tool adapter (a ``ToolAdapter``).

    Input (``INPUT_SCHEMA``): ``{method, url, headers, query, json | body, timeout_s}``.
    Output (``OUTPUT_SCHEMA``): ``{status, headers, json}`` when the response is JSON, else
    ``{status, headers, text}``, plus ``url`` (the final URL after redirects).

    The tool is generic, so it is catalogued as ``side_effect="write"``, not idempotent, and
    needing the ``http:request`` scope: a GET is safe but the same tool can POST or DELETE.
    The step's idempotency key goes out as ``Idempotency-Key`` on every request.

    Errors (``ToolError.code``): ``blocked_target`` (the policy refused the URL, a redirect or
    the resolved address; not retryable), ``invalid_args``, ``too_many_redirects``,
    ``response_too_large`` and ``bad_response`` (not retryable), ``http_4xx`` (not retryable;
    ``details.status``), ``http_retryable`` for 408, 429 and 5xx (retryable, ``retry_after_s``
    from ``Retry-After``), ``timeout`` and ``connection_error`` (retryable).
    """

    def __init__(
        self,
        policy: NetPolicy,
        *,
        max_response_bytes: int = 1_048_576,
        max_redirects: int = 5,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        """Build the tool.

        Args:
            policy: Where requests may go.
            max_response_bytes: Largest response body read, in bytes.
            max_redirects: Redirect hops followed, each re-checked against ``policy``.
            client: A client from ``make_guarded_client``; one is built when omitted. URLs are
                checked here too, but only a guarded client checks resolved addresses.
        """
        self._policy = policy
        self._max_response_bytes = max_response_bytes
        self._max_redirects = max_redirects
        self._client = client or make_guarded_client(
            policy, timeout_s=30.0, max_redirects=max_redirects
        )
        self._spec = ToolSpec(
            name="http.request",
            description="Send one HTTP request to an allowed host and return the response.",
            input_schema=INPUT_SCHEMA,
            output_schema=OUTPUT_SCHEMA,
            side_effect=SideEffect.WRITE,
            idempotent=False,
            required_scopes=["http:request"],
        )

    @property
    def spec(self) -> ToolSpec:
        """The tool's catalog entry."""
        return self._spec

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        await self._client.aclose()

    async def invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        """Send the request, follow redirects, classify the response.

        Raises:
            ToolError: See the class docstring for the codes.
        """
        try:
            return await self._invoke(args, ctx)
        # BlockedTargetError is raised by the transport at connect time too.
        except (BlockedTargetError, httpx2.DecodingError, httpx2.TransportError) as exc:
            raise request_error(exc) from exc

    async def _invoke(self, args: dict[str, Any], ctx: InvocationContext) -> ToolResult:
        method = str(args.get("method", "GET")).upper()
        if method not in METHODS:
            raise ToolError(f"unsupported method {method}", retryable=False, code="invalid_args")
        headers = _request_headers(args, ctx)
        timeout_s = min(float(args.get("timeout_s", ctx.timeout_s)), ctx.timeout_s)
        content: bytes | None = None
        if "json" in args:
            content = json.dumps(args["json"], separators=(",", ":")).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        elif "body" in args:
            content = str(args["body"]).encode()
        url = self._check(args["url"])
        if args.get("query"):
            url = url.copy_merge_params(args["query"])
        for hop in range(self._max_redirects + 1):
            request = self._client.build_request(
                method, url, headers=headers, content=content, timeout=timeout_s
            )
            response = await self._client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code not in REDIRECT_STATUSES or location is None:
                    body = await read_body(
                        response,
                        max_bytes=self._max_response_bytes,
                        attempt=ctx.attempt,
                        excerpt=response.status_code >= 400,
                    )
                    return self._result(response, body, ctx, redirects=hop)
            finally:
                await response.aclose()
            try:
                next_url = self._check(url.join(location))
            except httpx2.InvalidURL:
                raise request_error(BlockedTargetError("invalid_url", location)) from None
            if response.status_code == 303 or (
                response.status_code in {301, 302} and method == "POST"
            ):  # RFC 9110 §15.4.2-4: the follow-up is a GET without the body
                method = "GET" if method != "HEAD" else method
                content = None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if next_url.origin != url.origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
            url = next_url
        raise ToolError(
            f"more than {self._max_redirects} redirects",
            retryable=False,
            code="too_many_redirects",
            details={"url": str(url)},
        )

    def _check(self, url: str | httpx2.URL) -> httpx2.URL:
        try:
            return self._policy.check_url(url)
        except BlockedTargetError as exc:
            raise request_error(exc) from exc

    def _result(
        self, response: httpx2.Response, body: bytes, ctx: InvocationContext, *, redirects: int
    ) -> ToolResult:
        status = response.status_code
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if status >= 400:
            raise http_status_error(response, text, attempt=ctx.attempt)
        output: dict[str, Any] = {
            "status": status,
            "headers": {
                name: ", ".join(response.headers.get_list(name)) for name in response.headers
            },
            "url": str(response.url),
        }
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        output["text"] = text
        if body and (content_type == "application/json" or content_type.endswith("+json")):
            try:
                output["json"] = json.loads(body)
                del output["text"]
            except ValueError:
                pass  # a server that mislabels its body still gets its text through
        return ToolResult(output=output, usage={"bytes": len(body), "redirects": redirects})
