"""Outbound network policy for tools: which URLs and addresses a tool may reach (RELIABILITY S7).

Two checks guard every outbound request of ``http.request``:

1. ``NetPolicy.check_url`` on the URL, before a request is sent and again on every redirect hop:
   scheme and effective port allow-lists, host allow-list (glob patterns), no userinfo, no
   non-canonical numeric host (``2130706433``, ``0x7f.1``, ``127.1``: the WHATWG URL "ends in a
   number" forms that resolvers read as IPv4), no loopback or cloud-metadata host names, and an
   IP literal host checked like a resolved address.
2. ``GuardedNetworkBackend.connect_tcp`` at connect time: it resolves the host itself, checks
   every resolved address, and connects to a checked address only, so DNS rebinding (a name that
   is public when a validator looks and loopback when the client connects) cannot reach a blocked
   address. TLS still uses the original host name for SNI and certificate checks.

Blocked by default (OWASP API7:2023 "How to prevent", PayloadsAllTheThings SSRF): unspecified,
loopback, link-local (which holds the 169.254.169.254 metadata address), multicast, private
(RFC 1918, RFC 4193), shared CGNAT space (RFC 6598), reserved and any other non-global address
(IANA special-purpose registries), the IPv4 address embedded in IPv4-mapped, IPv4-compatible,
6to4, Teredo and NAT64 IPv6 forms, and known cloud-metadata addresses and host names.
``NetPolicy.allowed_networks`` lets an operator allow such a network explicitly.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore2
import httpx2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves ``(host, port)`` to IP address strings, like ``loop.getaddrinfo``."""

SUPPORTED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
"""Cloud instance-metadata host names (GCP, AWS), refused unless listed in ``allowed_hosts``."""
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack IMDS
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure WireServer (a global address)
        "fd00:ec2::254",  # AWS IMDS over IPv6
    )
)
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 CGNAT
_NAT64_PREFIXES = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_LOOPBACK_ADDRESSES = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


class BlockedTargetError(Exception):
    """A URL or address the network policy refuses; never worth retrying.

    Attributes:
        reason: Stable code, e.g. ``scheme``, ``port``, ``host_not_allowed``, ``userinfo``,
            ``non_canonical_ip``, ``metadata``, ``loopback``, ``private``, ``link_local``.
        target: The URL, host or address that was refused.
    """

    def __init__(self, reason: str, target: str) -> None:
        super().__init__(f"target {target!r} refused by network policy: {reason}")
        self.reason = reason
        self.target = target


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (6to4, Teredo, NAT64, IPv4-compatible)."""
    embedded: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if ip.teredo is not None:
        embedded.extend(ip.teredo)
    if any(ip in prefix for prefix in _NAT64_PREFIXES):
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d, deprecated by RFC 4291 §2.5.5.1
        embedded.append(ipaddress.IPv4Address(int(ip)))
    return embedded


def address_block_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is refused by default, or ``None`` for a global unicast address.

    Args:
        ip: A parsed IPv4 or IPv6 address.

    Returns:
        A reason code (``metadata``, ``unspecified``, ``loopback``, ``link_local``, ``multicast``,
        ``shared_address``, ``private``, ``reserved``, ``not_global``) or ``None``.
    """
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d reaches a.b.c.d on a dual-stack socket
            return address_block_reason(ip.ipv4_mapped)
        for inner in _embedded_ipv4(ip):
            reason = address_block_reason(inner)
            if reason is not None:
                return reason
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link_local"),
        (ip.is_multicast, "multicast"),
        (ip in _SHARED_ADDRESS_SPACE, "shared_address"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not_global"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _ends_in_number(host: str) -> bool:
    """WHATWG URL "ends in a number": the last label is decimal or ``0x`` hex, i.e. IPv4-ish."""
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if last.isdigit():
        return True
    return last[:2] == "0x" and all(c in "0123456789abcdef" for c in last[2:])


@dataclass(frozen=True)
class NetPolicy:
    """Where outbound tool requests may go.

    Attributes:
        allowed_schemes: URL schemes allowed; a subset of ``{"http", "https"}``.
        allowed_ports: Effective TCP ports allowed (the URL's port, else 80/443 by scheme).
        allowed_hosts: Host glob patterns (``api.example.com``, ``*.example.org``), matched
            case-insensitively; empty allows any host.
        allowed_networks: CIDRs (``127.0.0.1/32``) allowed even though loopback, private,
            link-local or metadata; an operator's explicit decision, checked first.

    Raises:
        ValueError: On construction, for an unsupported scheme or a malformed CIDR.
    """

    allowed_schemes: frozenset[str] = frozenset({"https", "http"})
    allowed_ports: frozenset[int] = frozenset({80, 443})
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: frozenset[str] = frozenset()
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any iterable from configuration, keep frozensets so the policy stays hashable.
        object.__setattr__(self, "allowed_schemes", frozenset(self.allowed_schemes))
        object.__setattr__(self, "allowed_ports", frozenset(self.allowed_ports))
        object.__setattr__(
            self, "allowed_hosts", frozenset(h.lower().rstrip(".") for h in self.allowed_hosts)
        )
        object.__setattr__(self, "allowed_networks", frozenset(self.allowed_networks))
        unsupported = self.allowed_schemes - SUPPORTED_SCHEMES
        if unsupported:
            raise ValueError(f"unsupported schemes {sorted(unsupported)}; only http and https")
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        object.__setattr__(self, "_networks", networks)

    def _network_allows(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._networks)

    def _host_allowed(self, host: str) -> bool:
        if not self.allowed_hosts:
            return True
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_hosts)

    def check_port(self, port: int) -> None:
        """Refuse a TCP port outside ``allowed_ports``.

        Raises:
            BlockedTargetError: With reason ``port``.
        """
        if port not in self.allowed_ports:
            raise BlockedTargetError("port", str(port))

    def check_address(self, address: str | IPAddress) -> IPAddress:
        """Check one IP address (a literal host or a resolved one).

        Args:
            address: The address; an IPv6 zone id (``fe80::1%eth0``) is allowed in a string.

        Returns:
            The parsed address.

        Raises:
            BlockedTargetError: With the reason from ``address_block_reason``, unless a network
                in ``allowed_networks`` contains the address; ``invalid_address`` when unparsable.
        """
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            raise BlockedTargetError("invalid_address", str(address)) from None
        if self._network_allows(ip):
            return ip
        reason = address_block_reason(ip)
        if reason is not None:
            raise BlockedTargetError(reason, str(ip))
        return ip

    def check_url(self, url: str | httpx2.URL) -> httpx2.URL:
        """Check a URL before any connection is made: scheme, port, userinfo, host.

        A host name passes this check without being resolved; its addresses are checked at
        connect time by ``GuardedNetworkBackend``. An IP literal host is checked here.

        Args:
            url: Absolute URL, parsed once with ``httpx2.URL``.

        Returns:
            The parsed URL, to send as is (parsing it again could read it differently).

        Raises:
            BlockedTargetError: With reason ``invalid_url``, ``scheme``, ``userinfo``, ``port``,
                ``invalid_host``, ``non_canonical_ip``, ``host_not_allowed``, ``metadata``,
                ``loopback`` or an address reason.
        """
        text = str(url)
        try:
            parsed = url if isinstance(url, httpx2.URL) else httpx2.URL(url)
        except (httpx2.InvalidURL, TypeError, ValueError):
            raise BlockedTargetError("invalid_url", text) from None
        if parsed.scheme not in self.allowed_schemes:
            raise BlockedTargetError("scheme", text)
        if parsed.userinfo:  # "http://trusted@evil" parser confusion
            raise BlockedTargetError("userinfo", text)
        host = parsed.host.lower().rstrip(".")
        if not host or "%" in host:  # empty host, IPv6 zone id or percent-encoding
            raise BlockedTargetError("invalid_host", text)
        self.check_port(parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme])
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is None and _ends_in_number(host):
            # Decimal, octal, hex and short IPv4 forms that getaddrinfo would accept.
            raise BlockedTargetError("non_canonical_ip", text)
        if not self._host_allowed(host):
            raise BlockedTargetError("host_not_allowed", text)
        if literal is not None:
            self.check_address(literal)
        elif host in METADATA_HOSTS and host not in self.allowed_hosts:
            raise BlockedTargetError("metadata", text)
        elif (host == "localhost" or host.endswith(".localhost")) and not self._allows_loopback():
            raise BlockedTargetError("loopback", text)  # RFC 6761 §6.3
        return parsed

    def _allows_loopback(self) -> bool:
        # "localhost" resolves to these; the resolved address is checked again at connect time.
        return any(self._network_allows(ip) for ip in _LOOPBACK_ADDRESSES)


async def resolve_with_getaddrinfo(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the event loop's ``getaddrinfo`` (TCP), in resolver order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedNetworkBackend(httpcore2.AsyncNetworkBackend):
    """An httpcore2 network backend that connects only to addresses the policy allows.

    ``connect_tcp`` resolves the host once, refuses the connection when any resolved address is
    blocked (a mixed answer is a rebinding attempt), then connects to the checked addresses in
    order. Resolution failures and timeouts become ``httpcore2.ConnectError`` /
    ``ConnectTimeout`` (httpx2 ``ConnectError`` / ``ConnectTimeout``).
    """

    def __init__(self, policy: NetPolicy, *, resolve: Resolver | None = None) -> None:
        self._policy = policy
        self._resolve = resolve or resolve_with_getaddrinfo
        self._inner = httpcore2.AnyIOBackend()

    async def _addresses(self, host: str, port: int, limit_s: float | None) -> Sequence[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            answers = await asyncio.wait_for(self._resolve(host, port), limit_s)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host!r} timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        if not answers:
            raise httpcore2.ConnectError(f"{host!r} resolved to no address")
        return answers

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (signature fixed by httpcore2)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Resolve, check and connect; see the class docstring.

        Raises:
            BlockedTargetError: When the port or any resolved address is refused.
            httpcore2.ConnectError: When no checked address accepts the connection.
        """
        self._policy.check_port(port)
        answers = await self._addresses(host, port, timeout)
        addresses = [self._policy.check_address(answer) for answer in answers]
        error: httpcore2.ConnectError | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore2.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (signature fixed by httpcore2)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Refuse: tools reach the network over TCP only.

        Raises:
            BlockedTargetError: Always, with reason ``unix_socket``.
        """
        raise BlockedTargetError("unix_socket", path)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (httpcore2 uses it between connection retries)."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """An httpx2 transport that checks each request's URL and each connection's address.

    Environment proxies are ignored (a proxy would make the connect-time check see the proxy,
    not the target).
    """

    def __init__(
        self,
        policy: NetPolicy,
        *,
        resolve: Resolver | None = None,
        limits: httpx2.Limits | None = None,
    ) -> None:
        limits = limits or httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        self._policy = policy
        # AsyncHTTPTransport takes no network backend, so replace its pool with a guarded one.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(policy, resolve=resolve),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Check ``request.url`` with ``NetPolicy.check_url``, then send it.

        Raises:
            BlockedTargetError: When the URL or the connected address is refused.
        """
        self._policy.check_url(request.url)
        return await super().handle_async_request(request)


def make_guarded_client(
    policy: NetPolicy,
    *,
    timeout_s: float,
    max_redirects: int = 5,
    resolve: Resolver | None = None,
) -> httpx2.AsyncClient:
    """Build an ``httpx2.AsyncClient`` whose every request and connection obeys ``policy``.

    Redirects are not followed (``follow_redirects=False``): the caller follows them and checks
    each ``Location`` with ``NetPolicy.check_url`` before the next hop.

    Args:
        policy: Where requests may go.
        timeout_s: Default connect/read/write/pool timeout, in seconds.
        max_redirects: Recorded on the client for callers that follow redirects.
        resolve: Host resolver, ``resolve_with_getaddrinfo`` by default; injectable for tests.

    Returns:
        A client the caller closes with ``aclose()``; it keeps no cookies. A request to a
        refused target raises ``BlockedTargetError`` before any TCP connection to it is made.
    """
    return httpx2.AsyncClient(
        transport=GuardedTransport(policy, resolve=resolve),
        # Tool calls are independent: a cookie set by one response must not ride on the next.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=timeout_s,
        follow_redirects=False,
        max_redirects=max_redirects,
        trust_env=False,
    )
