"""The outbound network policy on URLs and addresses (RELIABILITY S7, PayloadsAllTheThings SSRF)."""

from __future__ import annotations

import ipaddress

import pytest

from executor_service.tools.netguard import (
    BlockedTargetError,
    NetPolicy,
    address_block_reason,
)

DEFAULT = NetPolicy()


def refusal(policy: NetPolicy, url: str) -> str:
    with pytest.raises(BlockedTargetError) as caught:
        policy.check_url(url)
    return caught.value.reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.1.1/", "link_local"),
        ("http://[fe80::1]/", "link_local"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.255.0.9/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
        ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 of 10.0.0.1
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://100.64.0.1/", "shared_address"),
        ("http://100.100.100.200/", "metadata"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "private"),
        ("http://localhost/", "loopback"),
        ("http://LOCALHOST./", "loopback"),
        ("http://api.localhost/", "loopback"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://metadata/", "metadata"),
    ],
)
def test_blocked_addresses_and_names_are_refused_by_default(url: str, reason: str) -> None:
    assert refusal(DEFAULT, url) == reason


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal
        "http://0x7f000001/",  # hex
        "http://0x7f.1/",  # hex, short
        "http://017700000001/",  # octal
        "http://127.1/",  # short form
        "http://0/",
        "http://foo.0x7f/",
    ],
)
def test_non_canonical_numeric_hosts_are_refused_even_when_loopback_is_allowed(url: str) -> None:
    # getaddrinfo reads all of these as 127.0.0.1 (or 0.0.0.0); refused outright, not resolved.
    allowing = NetPolicy(allowed_networks=frozenset({"127.0.0.0/8", "0.0.0.0/8"}))
    assert refusal(DEFAULT, url) == "non_canonical_ip"
    assert refusal(allowing, url) == "non_canonical_ip"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://0177.0.0.1/", "invalid_url"),  # octal dotted quad: httpx2 refuses to parse it
        ("http://evil@127.0.0.1/", "userinfo"),
        ("http://user:pw@example.com/", "userinfo"),
        ("http://127.0.0.1%2f@example.com/", "userinfo"),
        ("http://[fe80::1%25eth0]/", "invalid_host"),
        ("gopher://example.com:70/_SSRF", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://example.com/", "scheme"),
        ("dict://example.com:11211/", "scheme"),
        ("http://example.com:22/", "port"),
        ("https://example.com:8443/", "port"),
        ("http://example.com:0/", "port"),
    ],
)
def test_parser_confusion_schemes_and_ports_are_refused(url: str, reason: str) -> None:
    assert refusal(DEFAULT, url) == reason


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://api.example.com/v1?q=1",
        "http://93.184.216.34/",
        "https://[2606:4700:4700::1111]/",
        "http://example.com:80/",
    ],
)
def test_public_targets_pass(url: str) -> None:
    assert DEFAULT.check_url(url).host in url.lower()


@pytest.mark.parametrize(
    ("networks", "url"),
    [
        ({"127.0.0.1/32"}, "http://127.0.0.1/"),
        ({"127.0.0.1/32"}, "http://[::ffff:127.0.0.1]/"),
        ({"127.0.0.1/32"}, "http://localhost/"),
        ({"::1/128"}, "http://[::1]/"),
        ({"169.254.169.254/32"}, "http://169.254.169.254/"),
        ({"10.0.0.0/8"}, "http://10.0.0.1/"),
        ({"192.168.0.0/16"}, "http://192.168.1.1/"),
        ({"172.16.0.0/12"}, "http://172.16.0.1/"),
        ({"fd00::/8"}, "http://[fd00::1]/"),
        ({"0.0.0.0/32"}, "http://0.0.0.0/"),
    ],
)
def test_allowed_networks_let_a_blocked_range_through(networks: set[str], url: str) -> None:
    assert refusal(DEFAULT, url)  # blocked without the entry
    NetPolicy(allowed_networks=frozenset(networks)).check_url(url)


def test_allowed_network_is_exact_not_a_blanket_pass() -> None:
    policy = NetPolicy(allowed_networks=frozenset({"127.0.0.1/32"}))
    assert refusal(policy, "http://127.0.0.2/") == "loopback"
    assert refusal(policy, "http://[::1]/") == "loopback"
    assert refusal(policy, "http://10.0.0.1/") == "private"
    assert refusal(policy, "http://169.254.169.254/") == "metadata"


def test_ports_schemes_and_metadata_hosts_are_allowed_only_when_listed() -> None:
    assert refusal(DEFAULT, "http://example.com:22/") == "port"
    NetPolicy(allowed_ports=frozenset({22})).check_url("http://example.com:22/")
    assert refusal(NetPolicy(allowed_schemes=frozenset({"https"})), "http://example.com/") == (
        "scheme"
    )
    assert refusal(DEFAULT, "http://metadata.google.internal/") == "metadata"
    policy = NetPolicy(allowed_hosts=frozenset({"metadata.google.internal"}))
    policy.check_url("http://metadata.google.internal/")
    with pytest.raises(ValueError, match="unsupported schemes"):
        NetPolicy(allowed_schemes=frozenset({"gopher"}))


def test_host_allowlist_globs() -> None:
    policy = NetPolicy(allowed_hosts=frozenset({"api.example.com", "*.example.org"}))
    policy.check_url("https://API.example.com/x")
    policy.check_url("https://a.example.org/")
    policy.check_url("https://a.b.example.org/")
    for url in ("https://example.org/", "https://example.com/", "https://api.example.com.evil/"):
        assert refusal(policy, url) == "host_not_allowed"
    # An IP literal must match a pattern too; the allow-list does not bypass the address check.
    assert refusal(policy, "http://93.184.216.34/") == "host_not_allowed"
    wildcard = NetPolicy(allowed_hosts=frozenset({"*"}))
    assert refusal(wildcard, "http://127.0.0.1/") == "loopback"


def test_check_address_on_resolved_strings() -> None:
    assert DEFAULT.check_address("8.8.8.8") == ipaddress.ip_address("8.8.8.8")
    for address, reason in [
        ("127.0.0.1", "loopback"),
        ("fe80::1%eth0", "link_local"),
        ("::ffff:10.1.2.3", "private"),
        ("not-an-ip", "invalid_address"),
    ]:
        with pytest.raises(BlockedTargetError) as caught:
            DEFAULT.check_address(address)
        assert caught.value.reason == reason


def test_address_block_reason_covers_embedded_ipv4_forms() -> None:
    teredo_to_private = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:f5ff:fffe")
    assert teredo_to_private.teredo is not None
    assert teredo_to_private.teredo[1] == ipaddress.IPv4Address("10.0.0.1")
    assert address_block_reason(teredo_to_private) == "private"
    assert address_block_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert address_block_reason(ipaddress.ip_address("1.1.1.1")) is None
    assert address_block_reason(ipaddress.ip_address("168.63.129.16")) == "metadata"
