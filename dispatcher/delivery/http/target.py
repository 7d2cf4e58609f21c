"""A webhook URL parsed once, with the constant part of the lean sender's request head.

``parse_target`` caches by URL (the deliverer posts to the same URLs again and again);
``presenting`` gives a target its own connection pool for a client certificate;
``request_bytes`` is the whole request, refusing a header that would split it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

from yarl import URL

from dispatcher.delivery.client_certificate import ClientCertificate
from dispatcher.delivery.failures import BlockedDestination
from dispatcher.delivery.http.sender import USER_AGENT
from dispatcher.delivery.http.ssrf import literal_ip, looks_numeric

_HEADER_BREAKS = ("\r", "\n", "\0")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL with the constant part of its request head."""

    # The pool: (scheme, host, port), plus the client certificate's fingerprint.
    key: tuple[str | int, ...]
    host: str  # IDNA-encoded name or IP literal without brackets
    port: int
    tls: bool
    literal: bool  # a canonical IP literal: connect to it without resolving
    numeric: bool  # looks like an IP to some parser: check_literal_host judges it
    head: bytes  # request line, Host, User-Agent, Content-Type
    client: ClientCertificate | None = None  # presented in the TLS handshake


@lru_cache(maxsize=4096)
def parse_target(url: str) -> Target:
    """``url`` parsed once (the deliverer posts to the same URLs again and again)."""
    try:
        parsed = URL(url)
        scheme, raw_host, port = parsed.scheme.lower(), parsed.raw_host, parsed.port
    except ValueError as exc:
        raise BlockedDestination(f"invalid URL: {exc}") from exc
    if scheme not in {"http", "https"} or not raw_host or port is None:
        raise BlockedDestination(f"invalid URL: {url!r} is not an absolute http(s) URL")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise BlockedDestination("invalid URL: credentials are not sent")
    host = raw_host.strip("[]")
    literal = literal_ip(host) is not None
    numeric = looks_numeric(host)
    shown = f"[{host}]" if ":" in host else host
    if parsed.explicit_port is not None and port != (443 if scheme == "https" else 80):
        shown = f"{shown}:{port}"
    path = parsed.raw_path_qs or "/"
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {shown}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Content-Type: application/json\r\n"
        ).encode("ascii")
    except UnicodeEncodeError as exc:  # yarl percent-encodes; this is a last guard
        raise BlockedDestination(f"invalid URL: {exc}") from exc
    if any(char in path or char in shown for char in (*_HEADER_BREAKS, " ")):
        raise BlockedDestination("invalid URL: whitespace or control characters")
    return Target((scheme, host, port), host, port, scheme == "https", literal, numeric, head)


@lru_cache(maxsize=1024)
def presenting(target: Target, certificate: ClientCertificate) -> Target:
    """``target`` with its own pool, whose connections present ``certificate``."""
    return replace(target, key=(*target.key, certificate.fingerprint_sha256), client=certificate)


def request_bytes(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The whole request; BlockedDestination for a header that would split it."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    # One check of the joined headers: exactly one CR and one LF per header, no NUL.
    if text.count("\r") != len(headers) or text.count("\n") != len(headers) or "\0" in text:
        for name, value in headers.items():
            if any(char in f"{name}: {value}" for char in _HEADER_BREAKS):
                raise BlockedDestination(f"invalid header {name!r}: contains CR, LF or NUL")
    head = target.head
    if "Content-Type" in headers:  # an OAuth token request's form, not a delivery
        head = head.replace(b"Content-Type: application/json\r\n", b"")
    return b"".join((head, text.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % len(body), body))
