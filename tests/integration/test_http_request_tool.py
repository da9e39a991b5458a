"""The ``http.request`` tool over real loopback HTTP, with canary listeners for SSRF (S7).

A canary is a listening TCP socket that never answers. The kernel completes a TCP handshake
whether or not ``accept()`` has been called, so draining its accept queue after a request
tells whether any connection reached it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import jsonschema
import pytest

from executor_service.tools.base import InvocationContext, ToolError
from executor_service.tools.http_request import HttpRequestTool
from executor_service.tools.netguard import BlockedTargetError, NetPolicy, make_guarded_client

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.host = host
        self.requests: list[Recorded] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/json":
            payload = {"ok": True, "query": query, "method": self.command}
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        elif parts.path == "/text":
            self._send(200, b"hello", {"Content-Type": "text/plain; charset=utf-8"})
        elif parts.path.startswith("/status/"):
            extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send(int(parts.path.rsplit("/", 1)[1]), b"server says no", extra)
        elif parts.path == "/redirect":
            self._send(int(query.get("status", "302")), b"", {"Location": query["to"]})
        elif parts.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif parts.path == "/big":
            self._send_big(int(query["n"]), declared=query.get("declared", "1") == "1")

    def _send_big(self, size: int, *, declared: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if declared:
            self.send_header("Content-Length", str(size))
        else:  # no length: the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            for start in range(0, size, 4096):
                self.wfile.write(b"x" * min(4096, size - start))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading at its size cap


class Canary:
    """A listener that never answers and counts the TCP connections that reached it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0

    def connections(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.accepted
            conn.close()
            self.accepted += 1

    def close(self) -> None:
        self.sock.close()


def ctx(*, attempt: int = 1, timeout_s: float = 5.0, key: str = "idem-1") -> InvocationContext:
    return InvocationContext(
        run_id=uuid4(),
        step_id="fetch",
        attempt=attempt,
        idempotency_key=key,
        timeout_s=timeout_s,
        tenant="acme",
        traceparent=TRACEPARENT,
    )


def loopback_policy(*ports: int) -> NetPolicy:
    return NetPolicy(allowed_ports=frozenset(ports), allowed_networks=frozenset({"127.0.0.1/32"}))


async def refused(tool: HttpRequestTool, url: str, **args: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await tool.invoke({"url": url, **args}, ctx())
    return caught.value


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    yield srv
    srv.stop()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.close()


@pytest.fixture
async def make_tool() -> AsyncIterator[Callable[..., HttpRequestTool]]:
    tools: list[HttpRequestTool] = []

    def make(policy: NetPolicy, **kwargs: Any) -> HttpRequestTool:
        tools.append(HttpRequestTool(policy, **kwargs))
        return tools[-1]

    yield make
    for tool in tools:
        await tool.aclose()


ToolFactory = Callable[..., HttpRequestTool]


def test_spec_is_a_write_tool_with_valid_schemas() -> None:
    spec = HttpRequestTool(NetPolicy()).spec
    assert (spec.name, spec.side_effect, spec.idempotent) == ("http.request", "write", False)
    assert spec.required_scopes == ["http:request"]
    jsonschema.Draft202012Validator.check_schema(spec.input_schema)
    validator = jsonschema.Draft202012Validator(spec.input_schema)
    assert validator.is_valid({"url": "https://example.com", "method": "POST", "json": [1]})
    assert not validator.is_valid({"url": "https://example.com", "json": 1, "body": "x"})
    assert not validator.is_valid({"url": "https://example.com", "method": "TRACE"})


async def test_get_sends_idempotency_key_and_traceparent(
    server: RecordingServer, make_tool: ToolFactory
) -> None:
    tool = make_tool(loopback_policy(server.port))
    headers = {"X-Caller": "yes", "X-Drop": "1", "Connection": "X-Drop"}
    args = {"url": server.url("/json?a=1"), "query": {"b": 2}, "headers": headers}
    result = await tool.invoke(args, ctx(key="run-7/fetch"))
    assert result.output["status"] == 200
    assert result.output["json"] == {"ok": True, "query": {"a": "1", "b": "2"}, "method": "GET"}
    assert result.output["url"] == server.url("/json?a=1&b=2")
    jsonschema.validate(result.output, tool.spec.output_schema)
    seen = server.requests[-1].headers
    assert seen["Idempotency-Key"] == "run-7/fetch"
    assert seen["traceparent"] == TRACEPARENT
    assert seen["X-Caller"] == "yes"
    assert "X-Drop" not in seen  # named by Connection: hop-by-hop (RFC 9110 §7.6.1)


async def test_post_json_and_text_response(server: RecordingServer, make_tool: ToolFactory) -> None:
    tool = make_tool(loopback_policy(server.port))
    result = await tool.invoke(
        {"method": "POST", "url": server.url("/text"), "json": {"n": 1}}, ctx()
    )
    assert result.output["text"] == "hello"
    assert "json" not in result.output
    sent = server.requests[-1]
    assert (sent.method, json.loads(sent.body)) == ("POST", {"n": 1})
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Idempotency-Key"] == "idem-1"


async def test_host_header_override_is_refused(
    server: RecordingServer, make_tool: ToolFactory
) -> None:
    tool = make_tool(loopback_policy(server.port))
    before = len(server.requests)
    error = await refused(tool, server.url("/json"), headers={"Host": "169.254.169.254"})
    assert (error.code, error.retryable) == ("invalid_args", False)
    assert len(server.requests) == before


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://2130706433:{port}/",
        "http://0x7f.1:{port}/",
        "http://127.1:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://evil.example@127.0.0.1:{port}/",
    ],
)
async def test_blocked_targets_get_no_tcp_connection(
    template: str, canary: Canary, make_tool: ToolFactory
) -> None:
    tool = make_tool(NetPolicy(allowed_ports=frozenset({canary.port})))
    error = await refused(tool, template.format(port=canary.port))
    assert (error.code, error.retryable) == ("blocked_target", False)
    assert canary.connections() == 0


async def test_canary_sees_a_connection_the_policy_allows(
    canary: Canary, make_tool: ToolFactory
) -> None:
    # Control for the test above: the same request, allowed, does reach the canary.
    tool = make_tool(loopback_policy(canary.port))
    with pytest.raises(ToolError) as caught:
        await tool.invoke({"url": f"http://127.0.0.1:{canary.port}/"}, ctx(timeout_s=0.3))
    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert canary.connections() == 1


class ScriptedResolver:
    """A resolver answering from a script, one answer per call (the last one repeats)."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def rebinding_pair() -> tuple[RecordingServer, Canary]:
    """A server on 127.0.0.2 and a canary on 127.0.0.1, on the same port."""
    for _ in range(20):
        srv = RecordingServer(host="127.0.0.2")
        try:
            return srv, Canary(port=srv.port)
        except OSError:
            srv.stop()
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


async def tool_with_resolver(
    policy: NetPolicy, resolve: Callable[[str, int], Awaitable[Sequence[str]]]
) -> HttpRequestTool:
    client = make_guarded_client(policy, timeout_s=5, resolve=resolve)
    return HttpRequestTool(policy, client=client)


async def test_dns_rebinding_is_checked_on_the_connect_time_answer() -> None:
    srv, canary = rebinding_pair()
    policy = NetPolicy(
        allowed_ports=frozenset({srv.port}), allowed_networks=frozenset({"127.0.0.2/32"})
    )
    url = f"http://rebind.example:{srv.port}/json"
    try:
        # A validator that resolved first would see the allowed address ...
        resolver = ScriptedResolver(["127.0.0.2"], ["127.0.0.1"])
        assert await resolver("rebind.example", srv.port) == ["127.0.0.2"]
        tool = await tool_with_resolver(policy, resolver)
        # ... but the connection is checked on its own answer, which is now loopback.
        error = await refused(tool, url)
        assert (error.code, error.details["reason"]) == ("blocked_target", "loopback")
        await tool.aclose()

        # The address that was checked is the one connected to: no second lookup.
        resolver = ScriptedResolver(["127.0.0.2"], ["127.0.0.1"])
        tool = await tool_with_resolver(policy, resolver)
        result = await tool.invoke({"url": url}, ctx())
        assert result.output["json"]["ok"] is True
        assert resolver.calls == ["rebind.example"]
        assert len(srv.requests) == 1
        await tool.aclose()

        # A mixed answer is refused as a whole.
        tool = await tool_with_resolver(policy, ScriptedResolver(["127.0.0.2", "127.0.0.1"]))
        error = await refused(tool, url)
        assert error.code == "blocked_target"
        await tool.aclose()
        assert canary.connections() == 0
        assert len(srv.requests) == 1
    finally:
        srv.stop()
        canary.close()


async def test_name_resolving_to_metadata_address_is_refused_at_connect(
    canary: Canary,
) -> None:
    policy = NetPolicy(allowed_ports=frozenset({canary.port}))
    resolver = ScriptedResolver(["169.254.169.254"])
    tool = await tool_with_resolver(policy, resolver)
    error = await refused(tool, f"http://innocent.example:{canary.port}/")
    await tool.aclose()
    assert error.details["reason"] == "metadata"
    assert resolver.calls == ["innocent.example"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://127.0.0.1:{canary}/", "port"),
        ("http://[::1]:{server}/", "loopback"),
        ("http://169.254.169.254:{server}/latest/meta-data/", "metadata"),
        ("http://2130706433:{server}/", "non_canonical_ip"),
        ("http://localhost.evil@127.0.0.1:{server}/", "userinfo"),
        ("gopher://127.0.0.1:{server}/_x", "scheme"),
        ("http://[::1", "invalid_url"),
    ],
)
async def test_each_redirect_hop_is_rechecked(
    location: str, reason: str, server: RecordingServer, canary: Canary, make_tool: ToolFactory
) -> None:
    tool = make_tool(loopback_policy(server.port))
    v6_canary = Canary(host="::1", port=server.port)
    before = len(server.requests)
    target = location.format(canary=canary.port, server=server.port)
    try:
        error = await refused(tool, server.url("/redirect"), query={"to": target})
        assert (error.code, error.retryable, error.details["reason"]) == (
            "blocked_target",
            False,
            reason,
        )
        assert len(server.requests) == before + 1  # only the redirecting hop was sent
        assert canary.connections() == 0
        assert v6_canary.connections() == 0
    finally:
        v6_canary.close()


@pytest.mark.parametrize(
    ("status", "method", "expected_method", "body_kept"),
    [
        (302, "GET", "GET", False),
        (303, "POST", "GET", False),
        (307, "POST", "POST", True),
        (308, "PUT", "PUT", True),
    ],
)
async def test_allowed_redirects_are_followed(
    status: int,
    method: str,
    expected_method: str,
    body_kept: bool,
    server: RecordingServer,
    make_tool: ToolFactory,
) -> None:
    tool = make_tool(loopback_policy(server.port))
    args: dict[str, Any] = {"method": method, "url": server.url("/redirect")}
    args["query"] = {"status": status, "to": "/json?hop=2"}
    if method != "GET":
        args["body"] = "payload"
    result = await tool.invoke(args, ctx())
    assert result.output["url"] == server.url("/json?hop=2")
    assert result.usage["redirects"] == 1
    final = server.requests[-1]
    assert final.method == expected_method
    assert final.body == (b"payload" if body_kept else b"")
    assert final.headers["Idempotency-Key"] == "idem-1"


async def test_credentials_are_not_forwarded_to_another_origin(
    server: RecordingServer, make_tool: ToolFactory
) -> None:
    other = RecordingServer()
    try:
        tool = make_tool(loopback_policy(server.port, other.port))
        headers = {"Authorization": "Bearer secret", "X-Trace": "t"}
        target = other.url("/json")
        await tool.invoke(
            {"url": server.url("/redirect"), "query": {"to": target}, "headers": headers}, ctx()
        )
        assert server.requests[-1].headers["Authorization"] == "Bearer secret"
        (followed,) = other.requests
        assert "Authorization" not in followed.headers
        assert followed.headers["X-Trace"] == "t"
        assert followed.headers["Idempotency-Key"] == "idem-1"
    finally:
        other.stop()


async def test_redirect_loop_stops(server: RecordingServer, make_tool: ToolFactory) -> None:
    tool = make_tool(loopback_policy(server.port), max_redirects=2)
    before = len(server.requests)
    error = await refused(tool, server.url("/loop"))
    assert (error.code, error.retryable) == ("too_many_redirects", False)
    assert len(server.requests) == before + 3


@pytest.mark.parametrize("declared", ["1", "0"])
async def test_response_over_the_size_cap_is_refused(
    declared: str, server: RecordingServer, make_tool: ToolFactory
) -> None:
    tool = make_tool(loopback_policy(server.port), max_response_bytes=10_000)
    fits = await tool.invoke(
        {"url": server.url("/big"), "query": {"n": 10_000, "declared": declared}}, ctx()
    )
    assert len(fits.output["text"]) == 10_000
    error = await refused(tool, server.url("/big"), query={"n": 200_000, "declared": declared})
    assert (error.code, error.retryable) == ("response_too_large", False)
    assert error.details["limit_bytes"] == 10_000


async def test_server_errors_are_retryable_with_a_stable_key(
    server: RecordingServer, make_tool: ToolFactory
) -> None:
    tool = make_tool(loopback_policy(server.port))
    for attempt in (1, 2):
        with pytest.raises(ToolError) as caught:
            await tool.invoke({"url": server.url("/status/500")}, ctx(attempt=attempt, key="k-5"))
        error = caught.value
        assert (error.code, error.retryable, error.retry_after_s) == ("http_retryable", True, None)
        assert error.details["status"] == 500
        assert error.details["attempt"] == attempt
        assert error.details["body_excerpt"] == "server says no"
    keys = [r.headers["Idempotency-Key"] for r in server.requests if r.path == "/status/500"]
    assert keys[-2:] == ["k-5", "k-5"]


async def test_retry_after_in_seconds_and_as_http_date(
    server: RecordingServer, make_tool: ToolFactory
) -> None:
    tool = make_tool(loopback_policy(server.port))
    error = await refused(tool, server.url("/status/429"), query={"retry_after": "3"})
    assert (error.retryable, error.retry_after_s) == (True, 3.0)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    error = await refused(tool, server.url("/status/503"), query={"retry_after": when})
    assert error.retryable
    assert error.retry_after_s is not None
    assert 25 <= error.retry_after_s <= 30
    error = await refused(tool, server.url("/status/408"))
    assert (error.code, error.retryable) == ("http_retryable", True)


async def test_client_errors_are_not_retryable(
    server: RecordingServer, make_tool: ToolFactory
) -> None:
    tool = make_tool(loopback_policy(server.port))
    for status in (400, 404, 422):
        error = await refused(tool, server.url(f"/status/{status}"), query={"retry_after": "3"})
        assert (error.code, error.retryable, error.retry_after_s) == ("http_4xx", False, None)
        assert error.details["status"] == status


async def test_refused_connection_is_retryable(make_tool: ToolFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])  # closed again: nothing listens here
    tool = make_tool(loopback_policy(port))
    error = await refused(tool, f"http://127.0.0.1:{port}/")
    assert (error.code, error.retryable) == ("connection_error", True)


async def test_guarded_client_refuses_blocked_urls_on_its_own(canary: Canary) -> None:
    # A client from make_guarded_client is safe even without the tool's own checks.
    client = make_guarded_client(NetPolicy(allowed_ports=frozenset({canary.port})), timeout_s=2)
    try:
        for host in ("127.0.0.1", "2130706433", "localhost", "[::1]"):
            with pytest.raises(BlockedTargetError):
                await client.get(f"http://{host}:{canary.port}/")
    finally:
        await client.aclose()
    assert canary.connections() == 0
