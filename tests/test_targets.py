"""Webhook URLs must be well-formed https and point at public addresses (SSRF rules).

Every lookup goes through a fake resolver the test controls: no real name is
resolved and nothing is sent anywhere.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.delivery.failures import BlockedDestination
from dispatcher.delivery.http.ssrf import (
    GuardedResolver,
    InvalidTarget,
    IPAddress,
    check_literal_host,
    check_target_url,
    forbidden_reason,
    looks_numeric,
    parse_cidrs,
)
from dispatcher.settings import Settings

STRICT = Settings(allow_private_targets=False)
LENIENT = Settings(allow_private_targets=True)

FORBIDDEN = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.0.8", "IETF"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "unique local"),
    ("fd12:3456:789a::1", "unique local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("fec0::1", "site-local"),
    ("100::1", "discard"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    # IPv4 embedded in IPv6: judged by the embedded address.
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.0",  # just above 172.16/12
    "169.253.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize(("address", "reason"), FORBIDDEN)
def test_forbidden_addresses_name_their_reason(address: str, reason: str) -> None:
    """Non-public addresses are forbidden, and the reason says which rule matched."""
    found = forbidden_reason(ipaddress.ip_address(address), ())
    assert found is not None
    assert reason in found


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    """Globally routable addresses, including public IPv4 embedded in IPv6, are allowed."""
    assert forbidden_reason(ipaddress.ip_address(address), ()) is None


@pytest.mark.parametrize(
    ("address", "cidrs", "allowed"),
    [
        ("10.1.2.3", ["10.1.0.0/16"], True),
        ("10.2.0.1", ["10.1.0.0/16"], False),
        ("127.0.0.1", ["127.0.0.0/8"], True),
        ("::ffff:10.1.2.3", ["10.1.0.0/16"], True),
        ("fd00::5", ["fd00::/64"], True),
        ("fd00:1::5", ["fd00::/64"], False),
        ("192.168.1.7", ["192.168.1.7"], True),
        ("192.168.1.7", ["192.168.1.1/24"], True),  # host bits ignored
        ("169.254.169.254", ["10.0.0.0/8"], False),
    ],
)
def test_allowlist_overrides_rules(address: str, cidrs: list[str], allowed: bool) -> None:
    """An address inside an allowed CIDR is allowed; others still follow the rules."""
    reason = forbidden_reason(ipaddress.ip_address(address), cidrs)
    assert (reason is None) is allowed


def test_bad_cidr_names_the_setting() -> None:
    """A malformed allowlist entry is a ValueError naming HOOKLANE_ALLOWED_TARGET_CIDRS."""
    with pytest.raises(ValueError, match="HOOKLANE_ALLOWED_TARGET_CIDRS"):
        parse_cidrs(["10.0.0.0/33"])


class FakeDNS:
    """A resolver answering from a table; unknown names fail like a DNS miss."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


DNS = {
    "hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "internal.example.com": ["10.0.0.5"],
    "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "v6local.example.com": ["fd00::1"],
    "empty.example.com": [],
    "localhost": ["127.0.0.1", "::1"],
}


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/webhooks",
        "https://hooks.example.com:8443/a/b?x=1",
        "HTTPS://hooks.example.com/",
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
    ],
)
async def test_accepts_public_https_urls(url: str) -> None:
    """Public https URLs pass registration."""
    await check_target_url(url, STRICT, FakeDNS(DNS))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/", "must use https"),
        ("ftp://hooks.example.com/", "must use https"),
        ("hooks.example.com/path", "must use https"),
        ("", "must use https"),
        ("https:///path-only", "no host"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://user@hooks.example.com/", "credentials"),
        ("https://hooks.example.com:99999/", "not valid"),
        ("https://hooks.example.com:0/", "port"),
        ("https://[::1/", "not valid"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com/\x00", "control"),
        ("https://hooks.example.com/" + "a" * 2048, "longer than 2048"),
        ("https://internal.example.com/", "private"),
        ("https://mixed.example.com/", "loopback"),
        ("https://metadata.example.com/", "cloud metadata"),
        ("https://mapped.example.com/", "loopback"),
        ("https://v6local.example.com/", "unique local"),
        ("https://localhost:8080/", "loopback"),
        ("https://127.0.0.1/", "loopback"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://2130706433/", "canonical"),
        ("https://127.1/", "canonical"),
        ("https://0x7f.0.0.1/", "canonical"),
        ("https://unknown.example.com/", "does not resolve"),
        ("https://a..example.com/", "not a valid domain name"),
        ("https://" + "a" * 64 + ".example.com/", "not a valid domain name"),
        ("https://\u00ad/", "not a valid domain name"),
        ("https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "loopback"),
        ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "loopback"),
        ("https://empty.example.com/", "does not resolve"),
    ],
)
async def test_rejects_with_a_clear_message(url: str, message: str) -> None:
    """Malformed, non-https, credentialed, unresolvable or non-public URLs are refused."""
    with pytest.raises(InvalidTarget, match=message):
        await check_target_url(url, STRICT, FakeDNS(DNS))


async def test_any_forbidden_address_rejects_the_host() -> None:
    """One forbidden address among public ones is enough to refuse (rebinding bait)."""
    with pytest.raises(InvalidTarget, match=r"mixed\.example\.com \(127\.0\.0\.1\)"):
        await check_target_url("https://mixed.example.com/", STRICT, FakeDNS(DNS))


async def test_resolves_the_urls_host_and_port() -> None:
    """The lookup is for the URL's host and effective port."""
    dns = FakeDNS(DNS)
    await check_target_url("https://hooks.example.com/x", STRICT, dns)
    await check_target_url("https://hooks.example.com:8443/x", STRICT, dns)
    assert dns.asked == [("hooks.example.com", 443), ("hooks.example.com", 8443)]


async def test_allowlist_applies_at_registration() -> None:
    """A private address inside HOOKLANE_ALLOWED_TARGET_CIDRS may be registered."""
    settings = STRICT.replace(allowed_target_cidrs=("10.0.0.0/24",))
    await check_target_url("https://internal.example.com/", settings, FakeDNS(DNS))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://localhost/x", "https://10.0.0.1/"]
)
async def test_private_targets_allowed_skip_resolution(url: str) -> None:
    """With private targets allowed, http and loopback pass and nothing is resolved."""
    dns = FakeDNS({})
    await check_target_url(url, LENIENT, dns)
    assert dns.asked == []


@pytest.mark.parametrize(
    ("url", "message"),
    [("ftp://x.example/", "https"), ("http://u:p@localhost/", "credentials")],
)
async def test_private_targets_allowed_still_check_shape(url: str, message: str) -> None:
    """Allowing private targets does not allow other schemes or credentials."""
    with pytest.raises(InvalidTarget, match=message):
        await check_target_url(url, LENIENT, FakeDNS({}))


@pytest.mark.parametrize(
    ("host", "numeric"),
    [
        ("127.0.0.1", True),
        ("2130706433", True),
        ("127.1", True),
        ("0x7f.1", True),
        ("::1", True),
        ("hooks.example.com", False),
        ("1.example.com", False),
        ("example.0x", False),
        ("localhost", False),
    ],
)
def test_looks_numeric(host: str, numeric: bool) -> None:
    """Hosts that only an IP parser would accept are recognised as numeric."""
    assert looks_numeric(host) is numeric


@pytest.mark.parametrize(
    ("host", "blocked"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("169.254.169.254", True),
        ("2130706433", True),
        ("8.8.8.8", False),
        ("hooks.example.com", False),  # names are the resolver's job
    ],
)
def test_check_literal_host(host: str, blocked: bool) -> None:
    """IP-literal hosts are judged before connecting; names are left to the resolver."""
    if blocked:
        with pytest.raises(BlockedDestination):
            check_literal_host(host, STRICT)
    else:
        check_literal_host(host, STRICT)
    check_literal_host(host, LENIENT)  # never blocks when private targets are allowed


class TableResolver(AbstractResolver):
    """An aiohttp resolver answering from a table."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for ip in self.table[host]
        ]

    async def close(self) -> None:
        pass


async def test_guarded_resolver_drops_forbidden_addresses() -> None:
    """The connect-time resolver returns only the public addresses of a mixed answer."""
    guard = GuardedResolver((), inner=TableResolver(DNS))
    answers = await guard.resolve("mixed.example.com", 443)
    assert [answer["host"] for answer in answers] == ["93.184.216.34"]


@pytest.mark.parametrize("host", ["internal.example.com", "localhost", "mapped.example.com"])
async def test_guarded_resolver_blocks_when_nothing_is_left(host: str) -> None:
    """A name that resolves only to forbidden addresses raises BlockedDestination."""
    guard = GuardedResolver((), inner=TableResolver(DNS))
    with pytest.raises(BlockedDestination, match="forbidden"):
        await guard.resolve(host, 443)


async def test_guarded_resolver_honours_the_allowlist() -> None:
    """Allowed CIDRs pass the connect-time guard too."""
    guard = GuardedResolver(["127.0.0.0/8"], inner=TableResolver(DNS))
    answers = await guard.resolve("localhost", 443)
    assert [answer["host"] for answer in answers] == ["127.0.0.1"]


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_embedded_ipv4_is_judged_like_the_ipv4(ip: ipaddress.IPv4Address) -> None:
    """IPv4-mapped, 6to4 and NAT64 forms of an address are allowed iff the address is."""
    allowed = forbidden_reason(ip, ()) is None
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(ip) << 80) | 1)
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(ip))
    for form in (mapped, sixtofour, nat64):
        assert (forbidden_reason(form, ()) is None) is allowed, form


NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NETWORKS).flatmap(lambda net: st.ip_addresses(network=net)))
def test_every_address_of_a_forbidden_network_is_forbidden(ip: IPAddress) -> None:
    """Not just the examples: any address inside a forbidden range is refused."""
    assert forbidden_reason(ip, ()) is not None
