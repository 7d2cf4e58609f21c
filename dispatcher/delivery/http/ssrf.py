"""Which destinations a webhook may point at (SSRF protection).

Two checks, one rule:

- at registration, ``check_target_url`` validates the URL's shape and resolves its
  host: every address must be public (``forbidden_reason`` is None);
- at connect time, ``GuardedResolver`` (an aiohttp resolver) drops forbidden addresses
  from every lookup and raises ``BlockedDestination`` when none is left, so a name that
  resolved to a public address at registration and to ``127.0.0.1`` later (DNS
  rebinding) still cannot reach the inside. URLs with a literal IP bypass resolvers in
  aiohttp; ``check_literal_host`` covers them before the request.

``HOOKLANE_ALLOW_PRIVATE_TARGETS`` turns both off (development, tests against
loopback); ``HOOKLANE_ALLOWED_TARGET_CIDRS`` lists networks allowed despite the rule.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from urllib.parse import urlsplit

from aiohttp import DefaultResolver
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher.delivery.failures import BlockedDestination
from dispatcher.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0
CLOUD_METADATA = ipaddress.IPv4Address("169.254.169.254")

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order: the first match names the reason. Broadcast comes before the
# reserved 240/4 block that contains it.
_FORBIDDEN_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("0.0.0.0/8"), "unspecified ('this network')"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT (shared)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "IETF protocol assignment"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),
)

_FORBIDDEN_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("::/96"), "IPv4-compatible (deprecated)"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001::/32"), "Teredo tunnel"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("fc00::/7"), "unique local (private)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
)

_NAT64 = _V6("64:ff9b::/96")


# Where a developer's loopback or http:// receiver is refused: the one switch that helps.
PRIVATE_TARGETS_HINT = (
    " (for local development, run Hooklane with HOOKLANE_ALLOW_PRIVATE_TARGETS=true"
    " to allow http:// and loopback or private receivers)"
)


class InvalidTarget(ValueError):
    """A webhook URL that may not be registered; ``str()`` is the user-facing reason."""


def parse_cidrs(cidrs: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """Networks from ``HOOKLANE_ALLOWED_TARGET_CIDRS`` entries (host bits are ignored)."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        if isinstance(cidr, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(cidr)
            continue
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"HOOKLANE_ALLOWED_TARGET_CIDRS: {cidr!r} is not a CIDR (e.g. 10.1.0.0/16)"
            ) from None
    return tuple(networks)


@lru_cache(maxsize=64)
def _cached_networks(cidrs: tuple[str | IPNetwork, ...]) -> tuple[IPNetwork, ...]:
    return parse_cidrs(cidrs)


def forbidden_reason(ip: IPAddress, allowed_cidrs: Iterable[str | IPNetwork] = ()) -> str | None:
    """Why a webhook may not connect to ``ip`` (e.g. ``"loopback"``), or None if it may.

    IPv6 addresses that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged
    by the embedded address. A match in ``allowed_cidrs`` overrides every rule.
    """
    allowed = _cached_networks(tuple(allowed_cidrs))
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if _in_any(ip, allowed) or (embedded is not None and _in_any(embedded, allowed)):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_reason(ip)
    if embedded is not None:
        inner = _ipv4_reason(embedded)
        return None if inner is None else f"{inner} (embedded in IPv6 {ip})"
    for network, reason in _FORBIDDEN_V6:
        if ip in network:
            return reason
    return None if ip.is_global else "not globally routable"


def _ipv4_reason(ip: ipaddress.IPv4Address) -> str | None:
    if ip == CLOUD_METADATA:
        return "link-local (cloud metadata service)"
    for network, reason in _FORBIDDEN_V4:
        if ip in network:
            return reason
    return None if ip.is_global else "not globally routable"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _in_any(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(ip.version == network.version and ip in network for network in networks)


def literal_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is an IP literal (brackets and zone allowed)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def looks_numeric(host: str) -> bool:
    """True for hosts that only an IP parser would accept (``127.1``, ``0x7f.1``, ``::1``).

    No top-level domain is numeric, so such a host is either a canonical IP literal or
    a legacy form (``2130706433``) that ``getaddrinfo`` would quietly turn into one.
    """
    if ":" in host:
        return True
    last = host.rstrip(".").rsplit(".", 1)[-1].lower()
    return last.isdigit() or (last.startswith("0x") and _is_hex(last[2:]))


def _is_hex(text: str) -> bool:
    return bool(text) and all(char in "0123456789abcdef" for char in text)


def check_literal_host(host: str, settings: Settings) -> None:
    """Raise BlockedDestination for a numeric host that is not an allowed IP literal.

    aiohttp connects to IP-literal hosts without asking the resolver, so the
    connect-time guard checks them here; ``looks_numeric`` covers every host aiohttp
    treats as a literal (``":" in host`` or digits and dots) and hex forms too.
    """
    if settings.allow_private_targets or not looks_numeric(host):
        return
    ip = literal_ip(host)
    if ip is None:
        raise BlockedDestination(f"{host} is not a canonical IP address")
    reason = forbidden_reason(ip, settings.allowed_target_cidrs)
    if reason is not None:
        raise BlockedDestination(f"{ip} is a {reason} address")


async def check_target_url(url: str, settings: Settings, resolve: Resolve | None = None) -> None:
    """Raise InvalidTarget unless ``url`` may be registered as a webhook URL.

    The URL must be absolute https (http too with private targets allowed), name a
    host, carry no credentials and be at most 2048 characters. Unless private targets
    are allowed, the host must resolve, and every address must be public (or in
    ``allowed_target_cidrs``). ``resolve(host, port) -> [ip, ...]`` defaults to the
    event loop's ``getaddrinfo``; tests pass their own.
    """
    host, port = _parse(url, settings)
    if settings.allow_private_targets:
        return
    ip = literal_ip(host)
    if ip is not None:
        addresses = [ip]
    elif looks_numeric(host):
        raise InvalidTarget(f"the host {host!r} is not a canonical IP address")
    else:
        addresses = await _resolve_all(host, port, resolve or _getaddrinfo)
    for address in addresses:
        reason = forbidden_reason(address, settings.allowed_target_cidrs)
        if reason is not None:
            shown = host if ip is not None else f"{host} ({address})"
            raise InvalidTarget(
                f"the URL's host {shown} is a {reason} address; "
                f"webhook URLs must point at public addresses{PRIVATE_TARGETS_HINT}"
            )


def _parse(url: str, settings: Settings) -> tuple[str, int]:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidTarget(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise InvalidTarget("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidTarget(f"the URL is not valid: {exc}") from None
    schemes = {"https", "http"} if settings.allow_private_targets else {"https"}
    if parts.scheme.lower() not in schemes:
        raise InvalidTarget(f"the URL must use https{PRIVATE_TARGETS_HINT}")
    if "@" in parts.netloc:
        raise InvalidTarget("the URL must not contain credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise InvalidTarget("the URL has no host")
    if port == 0:
        raise InvalidTarget("the URL's port must be 1-65535")
    return _ascii_host(host), port or (443 if parts.scheme.lower() == "https" else 80)


def _ascii_host(host: str) -> str:
    """``host`` as the resolver will see it: IP literals as they are, names IDNA-encoded
    (so a full-width "localhost" is judged as ``localhost``); InvalidTarget if impossible."""
    if literal_ip(host) is not None:
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidTarget(
            f"the host {host!r} is not a valid domain name (empty or over-long label)"
        ) from None


async def _resolve_all(host: str, port: int, resolve: Resolve) -> list[IPAddress]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            answers = await resolve(host, port)
    except TimeoutError:
        raise InvalidTarget(f"looking up the host {host} timed out") from None
    except OSError:
        raise InvalidTarget(f"the host {host} does not resolve (DNS lookup failed)") from None
    addresses = [ip for ip in (literal_ip(answer) for answer in answers) if ip is not None]
    if not addresses:
        raise InvalidTarget(f"the host {host} does not resolve to any address")
    return addresses


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that never returns a forbidden address.

    Wraps another resolver (aiohttp's default unless given), drops every forbidden
    address from its answer and raises ``BlockedDestination`` when none is left.
    """

    def __init__(
        self,
        allowed_cidrs: Iterable[str | IPNetwork] = (),
        inner: AbstractResolver | None = None,
    ) -> None:
        self._allowed = parse_cidrs(allowed_cidrs)
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The inner resolver's answer without forbidden addresses."""
        answers = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for answer in answers:
            ip = literal_ip(answer["host"])
            reason = "unparseable" if ip is None else forbidden_reason(ip, self._allowed)
            if reason is None:
                allowed.append(answer)
            else:
                refused.append(f"{answer['host']} ({reason})")
        if not allowed:
            shown = ", ".join(refused) or "no address"
            raise BlockedDestination(f"{host} resolves only to forbidden addresses: {shown}")
        return allowed

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()
