"""S7: ``http.request`` never opens a TCP connection to a blocked address (RELIABILITY §3).

Canaries are listening sockets on one shared port on 127.0.0.1, 127.0.0.2 and ::1 that never
answer. The kernel completes the TCP handshake without ``accept()``, so draining the accept
queues after a request tells whether any connection reached any loopback address on that port.
Each SSRF form is first shown to reach a canary with a plain socket connect (through the real
``getaddrinfo``), so the refusal that follows is the policy's doing, not a dead target's.

tests/unit/test_netguard.py checks ``NetPolicy.check_url`` reasons and
tests/integration/test_http_request_tool.py single-canary and scripted-resolver cases; these add
the several-address canaries, the real resolver (a host name from /etc/hosts) and a redirect
from an allowed server towards another loopback address.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from uuid import uuid4

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from executor_service.tools.base import InvocationContext, ToolError
from executor_service.tools.http_request import HttpRequestTool
from executor_service.tools.netguard import NetPolicy

from ..support.threaded_server import ThreadedServer

CANARY_HOSTS = ("127.0.0.1", "127.0.0.2", "::1")


@dataclass
class Canaries:
    """Silent listeners on one port of several loopback addresses."""

    port: int
    socks: dict[str, socket.socket]

    def connections(self, settle_s: float = 0.2) -> dict[str, int]:
        """Connections queued on each canary since the last call (waits ``settle_s`` seconds)."""
        time.sleep(settle_s)  # a SYN in flight on loopback lands well within this
        seen: dict[str, int] = {}
        for host, sock in self.socks.items():
            count = 0
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
            seen[host] = count
        return seen

    def total(self) -> int:
        return sum(self.connections().values())

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_canaries(hosts: tuple[str, ...] = CANARY_HOSTS) -> Canaries:
    """Canaries on one free port of every host in ``hosts`` (``::1`` only if it can bind)."""
    for _ in range(50):
        first = _listen(hosts[0], 0)
        port = int(first.getsockname()[1])
        socks = {hosts[0]: first}
        try:
            for host in hosts[1:]:
                try:
                    socks[host] = _listen(host, port)
                except OSError as exc:
                    if host == "::1" and exc.errno in (97, 99):  # no IPv6 loopback here
                        continue
                    raise
            return Canaries(port, socks)
        except OSError:
            for sock in socks.values():
                sock.close()
    raise RuntimeError(f"no port free on all of {hosts}")


@pytest.fixture
def canaries() -> Iterator[Canaries]:
    c = open_canaries()
    yield c
    c.close()


def ctx(timeout_s: float = 2.0) -> InvocationContext:
    return InvocationContext(
        run_id=uuid4(),
        step_id="fetch",
        attempt=1,
        idempotency_key="ssrf-1",
        timeout_s=timeout_s,
        tenant="acme",
        traceparent=None,
    )


async def refusal(tool: HttpRequestTool, url: str) -> ToolError:
    try:
        with pytest.raises(ToolError) as caught:
            await tool.invoke({"url": url}, ctx())
    finally:
        await tool.aclose()
    return caught.value


def reaches_a_canary(host: str, canaries: Canaries) -> bool:
    """Whether a plain connect to ``host`` (through getaddrinfo) lands on a canary."""
    try:
        with socket.create_connection((host, canaries.port), timeout=1.0):
            pass
    except OSError:
        return False
    return canaries.total() == 1


def loopback_name() -> str:
    """A host name that the system resolver maps to loopback (/etc/hosts), not ``localhost``."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"host name {name!r} does not resolve")
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    if name == "localhost" or not all(a.is_loopback for a in addresses):
        pytest.skip(f"host name {name!r} does not resolve to loopback only: {addresses}")
    return name


# (URL template, host a plain socket would use for the same target, expected refusal reason)
FORMS = [
    ("http://127.0.0.1:{port}/", "127.0.0.1", "loopback"),
    ("http://127.0.0.2:{port}/", "127.0.0.2", "loopback"),
    ("http://localhost:{port}/", "localhost", "loopback"),
    ("http://127.1:{port}/", "127.1", "non_canonical_ip"),
    ("http://2130706433:{port}/", "2130706433", "non_canonical_ip"),
    ("http://2130706434:{port}/", "2130706434", "non_canonical_ip"),  # 127.0.0.2
    ("http://0x7f000001:{port}/", "0x7f000001", "non_canonical_ip"),
    ("http://0177.0.0.1:{port}/", "0177.0.0.1", "invalid_url"),
    ("http://[::1]:{port}/", "::1", "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/", "::ffff:127.0.0.1", "loopback"),
    ("http://[::ffff:7f00:2]:{port}/", "::ffff:7f00:2", "loopback"),
    ("http://0.0.0.0:{port}/", "0.0.0.0", "unspecified"),
    ("http://public.example@127.0.0.1:{port}/", "127.0.0.1", "userinfo"),
    ("http://public.example:x@127.0.0.2:{port}/", "127.0.0.2", "userinfo"),
    ("gopher://127.0.0.1:{port}/_SET%20x", "127.0.0.1", "scheme"),
    ("ftp://127.0.0.1:{port}/", "127.0.0.1", "scheme"),
]


@pytest.mark.parametrize(("template", "host", "reason"), FORMS)
async def test_ssrf_form_is_refused_without_any_tcp_connection(
    template: str, host: str, reason: str, canaries: Canaries
) -> None:
    if host == "::1" and "::1" not in canaries.socks:
        pytest.skip("no IPv6 loopback on this machine")
    # Control: the form is a real way to reach the canaries on this machine.
    assert reaches_a_canary(host, canaries), f"{host} does not reach a canary; test is void"
    # Default policy, except that the canaries' port is allowed: only the address can refuse.
    tool = HttpRequestTool(NetPolicy(allowed_ports=frozenset({canaries.port})))
    error = await refusal(tool, template.format(port=canaries.port))
    assert (error.code, error.retryable, error.details["reason"]) == (
        "blocked_target",
        False,
        reason,
    )
    assert canaries.connections() == dict.fromkeys(canaries.socks, 0)


async def test_name_resolving_to_loopback_is_refused_at_connect_time(canaries: Canaries) -> None:
    # No scripted resolver: the real getaddrinfo answers, the URL check cannot know the address.
    name = loopback_name()
    assert reaches_a_canary(name, canaries)
    policy = NetPolicy(allowed_ports=frozenset({canaries.port}))
    policy.check_url(f"http://{name}:{canaries.port}/")  # passes the URL check ...
    error = await refusal(HttpRequestTool(policy), f"http://{name}:{canaries.port}/")
    # ... and is refused on the resolved address, before connecting.
    assert (error.code, error.retryable, error.details["reason"]) == (
        "blocked_target",
        False,
        "loopback",
    )
    assert canaries.total() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
async def test_instance_metadata_is_refused(url: str) -> None:
    # No listener can sit on 169.254.169.254 here; the refusal comes before any connect.
    error = await refusal(HttpRequestTool(NetPolicy()), url)
    assert (error.code, error.retryable, error.details["reason"]) == (
        "blocked_target",
        False,
        "metadata",
    )


@pytest.mark.parametrize("url", ["file:///etc/passwd", "file://localhost/etc/hostname"])
async def test_file_scheme_is_refused(url: str) -> None:
    error = await refusal(HttpRequestTool(NetPolicy()), url)
    assert (error.code, error.retryable, error.details["reason"]) == (
        "blocked_target",
        False,
        "scheme",
    )
    assert "root:" not in str(error)


@dataclass
class Redirector:
    """An allowed server on 127.0.0.1 whose ``/go?to=URL`` answers 302 to ``URL``."""

    port: int
    hits: list[str]

    def url(self, to: str) -> str:
        return f"http://127.0.0.1:{self.port}/go?to={to}"


@pytest.fixture
async def redirector() -> AsyncIterator[Redirector]:
    hits: list[str] = []

    async def go(request: Request) -> Response:
        hits.append(str(request.url))
        return RedirectResponse(request.query_params["to"], status_code=302)

    async def ok(request: Request) -> Response:
        hits.append(str(request.url))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/go", go), Route("/ok", ok)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = ThreadedServer(app, sock, "ssrf-redirector")
    server.start()
    try:
        yield Redirector(int(sock.getsockname()[1]), hits)
    finally:
        server.stop()
        sock.close()


@pytest.fixture
def far_canaries() -> Iterator[Canaries]:
    """Canaries on 127.0.0.2 and ::1 only: 127.0.0.1 is the allowed redirector's network."""
    c = open_canaries(("127.0.0.2", "::1"))
    yield c
    c.close()


def redirect_policy(redirector: Redirector, canaries: Canaries, *extra: str) -> NetPolicy:
    return NetPolicy(
        allowed_ports=frozenset({redirector.port, canaries.port}),
        allowed_networks=frozenset({"127.0.0.1/32", *extra}),
    )


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://127.0.0.2:{port}/", "loopback"),
        ("http://[::1]:{port}/", "loopback"),
        ("http://[::ffff:127.0.0.2]:{port}/", "loopback"),
        ("http://2130706434:{port}/", "non_canonical_ip"),
        ("http://allowed.example@127.0.0.2:{port}/", "userinfo"),
        ("gopher://127.0.0.2:{port}/_x", "scheme"),
    ],
)
async def test_redirect_from_an_allowed_server_to_a_canary_makes_no_connection(
    location: str, reason: str, redirector: Redirector, far_canaries: Canaries
) -> None:
    tool = HttpRequestTool(redirect_policy(redirector, far_canaries))
    target = location.format(port=far_canaries.port)
    error = await refusal(tool, redirector.url(target))
    assert (error.code, error.retryable, error.details["reason"]) == (
        "blocked_target",
        False,
        reason,
    )
    assert len(redirector.hits) == 1  # the allowed first hop was sent ...
    assert far_canaries.connections() == dict.fromkeys(far_canaries.socks, 0)  # ... not the 2nd


async def test_redirect_control_the_canary_sees_an_allowed_hop(
    redirector: Redirector, far_canaries: Canaries
) -> None:
    # Same redirect with 127.0.0.2 allowed: the hop reaches the silent canary and times out,
    # so the silence asserted above is the policy's refusal, not a canary that cannot see.
    tool = HttpRequestTool(redirect_policy(redirector, far_canaries, "127.0.0.2/32"))
    try:
        with pytest.raises(ToolError) as caught:
            await tool.invoke(
                {"url": redirector.url(f"http://127.0.0.2:{far_canaries.port}/")},
                ctx(timeout_s=0.5),
            )
    finally:
        await tool.aclose()
    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert far_canaries.connections()["127.0.0.2"] == 1
