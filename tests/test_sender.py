"""The sender suite: every production sender, on both event loops, behaves the same.

Parametrized over ``HttpSender`` (the lean default) and ``AiohttpSender``, and over
asyncio's loop and uvloop. Everything runs against loopback servers; a resolver the
test controls plays DNS, so no real name is resolved.
"""

from __future__ import annotations

import asyncio
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import uvloop
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher.delivery.failures import (
    BlockedDestination,
    ConnectError,
    DeliveryError,
    DeliveryTimeout,
    ProtocolError,
    TLSError,
)
from dispatcher.delivery.http.factory import make_sender
from dispatcher.delivery.http.lean import HttpSender
from dispatcher.delivery.http.sender import (
    MAX_RESPONSE_BODY,
    MAX_RESPONSE_HEADERS,
    AiohttpSender,
    ClosableSender,
    bound_headers,
)
from dispatcher.settings import Settings, SettingsError
from tests.support.sender import Certificates, ScriptedServer, make_certificates, start_server
from tests.test_ssrf import RebindingResolver

STRICT = Settings(allow_private_targets=False, delivery_timeout_s=5.0)
LENIENT = Settings(allow_private_targets=True, delivery_timeout_s=5.0)
SIGNED = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": "v1,x"}

Make = Callable[..., ClosableSender]

# pytest-asyncio's replacement (a loop-factories hook) is global to the session; this
# module alone runs on both loops, so it keeps the per-module policy fixture.
pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy"')


@pytest.fixture(
    params=[asyncio.DefaultEventLoopPolicy, uvloop.EventLoopPolicy], ids=["asyncio", "uvloop"]
)
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    policy: asyncio.AbstractEventLoopPolicy = request.param()
    return policy


@pytest.fixture(params=["fast", "aiohttp"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """A factory of the parametrized sender kind; every sender is closed afterwards."""
    made: list[ClosableSender] = []

    def build(
        settings: Settings,
        resolver: AbstractResolver | None = None,
        ssl_context: object = None,
    ) -> ClosableSender:
        kind = HttpSender if request.param == "fast" else AiohttpSender
        sender = kind(settings, resolver=resolver, ssl_context=ssl_context)  # type: ignore[arg-type]
        made.append(sender)
        return sender

    yield build
    for sender in made:
        await sender.close()


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    state = ScriptedServer()
    running = await start_server(state)
    yield state
    state.stopping.set()
    running.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certificates]:
    yield make_certificates(Path(tmp_path_factory.mktemp("tls")))


async def _tls_server(
    certificates: Certificates, pair: tuple[Path, Path]
) -> tuple[ScriptedServer, asyncio.Server]:
    state = ScriptedServer()
    running = await start_server(state, certificates.server_context(pair))
    return state, running


# Answers


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/ok", 200, b"ok"),
        ("/chunked", 200, b"hello world"),
        ("/close", 200, b"close-delimited"),
        ("/close-length", 200, b"bye"),
        ("/continue", 201, b"made"),
        ("/no-content", 204, b""),
    ],
)
async def test_answers_are_read_whole(
    make: Make, server: ScriptedServer, path: str, status: int, body: bytes
) -> None:
    """Content-Length, chunked, close-delimited and empty bodies; 1xx interim answers skipped."""
    sender = make(LENIENT)
    response = await sender.send(server.url(path), b"{}", SIGNED)
    assert (response.status, response.body) == (status, body)


async def test_redirects_are_answers_not_followed(make: Make, server: ScriptedServer) -> None:
    """A 302 comes back as the response; its Location is never requested."""
    response = await make(LENIENT).send(server.url("/redirect"), b"{}", SIGNED)
    assert response.status == 302
    assert server.paths == ["/redirect"]


async def test_retry_after_is_passed_on(make: Make, server: ScriptedServer) -> None:
    """The Retry-After header of a 503 reaches the policy."""
    response = await make(LENIENT).send(server.url("/retry-after"), b"{}", SIGNED)
    assert (response.status, response.retry_after) == (503, "7")


async def test_response_headers_are_kept_bounded(make: Make, server: ScriptedServer) -> None:
    """The first MAX_RESPONSE_HEADERS headers come back in order, cookies left out."""
    response = await make(LENIENT).send(server.url("/many-headers"), b"{}", SIGNED)
    names = [name.lower() for name, _ in response.headers]  # aiohttp normalises case
    assert len(names) == MAX_RESPONSE_HEADERS
    assert names[:3] == ["x-request-id", "x-h-0", "x-h-1"]
    assert response.headers[0][1] == "r-1"
    assert "set-cookie" not in names


async def test_response_bodies_are_capped(make: Make, server: ScriptedServer) -> None:
    """A 10 MiB answer yields a MAX_RESPONSE_BODY body and bounded sender memory."""
    sender = make(LENIENT)
    tracemalloc.start()
    try:
        response = await sender.send(server.url("/huge"), b"{}", SIGNED)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 200
    assert len(response.body) == MAX_RESPONSE_BODY
    assert peak < 2 * 1024 * 1024


# Connections


async def test_keep_alive_connections_are_reused(make: Make, server: ScriptedServer) -> None:
    """Sequential requests to one host share one connection."""
    sender = make(LENIENT)
    for _ in range(5):
        assert (await sender.send(server.url("/ok"), b"{}", SIGNED)).status == 200
    assert server.connections == 1
    assert server.paths == ["/ok"] * 5


async def test_connection_close_is_honoured(make: Make, server: ScriptedServer) -> None:
    """After `Connection: close` the next request opens a new connection and succeeds."""
    sender = make(LENIENT)
    for _ in range(3):
        assert (await sender.send(server.url("/close-length"), b"{}", SIGNED)).body == b"bye"
    assert server.connections == 3


async def test_the_request_carries_body_and_headers(make: Make) -> None:
    """The receiver gets the exact body, the signature headers and the JSON content type."""
    seen: dict[str, object] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        seen["headers"] = {k.lower(): v for k, v in headers.items()}
        seen["body"] = await reader.readexactly(int(seen["headers"]["content-length"]))  # type: ignore[index]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    running = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = running.sockets[0].getsockname()[1]
    try:
        await make(LENIENT).send(f"http://127.0.0.1:{port}/in?x=1", b'{"a": 1}', SIGNED)
    finally:
        running.close()
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert seen["body"] == b'{"a": 1}'
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert {k: headers[k] for k in SIGNED} == SIGNED


# Failures and their classes


async def test_silence_is_a_delivery_timeout(make: Make, server: ScriptedServer) -> None:
    """No answer within delivery_timeout_s raises DeliveryTimeout."""
    sender = make(LENIENT.replace(delivery_timeout_s=0.3))
    with pytest.raises(DeliveryTimeout):
        await sender.send(server.url("/silent"), b"{}", SIGNED)


async def test_silence_on_a_reused_connection_is_a_timeout(
    make: Make, server: ScriptedServer
) -> None:
    """A kept-alive connection that stops answering times out within the deadline (plus
    the sweep's tick) and is dropped: the next request gets a new connection."""
    sender = make(LENIENT.replace(delivery_timeout_s=0.3))
    assert (await sender.send(server.url("/ok"), b"{}", SIGNED)).status == 200
    started = time.monotonic()
    with pytest.raises(DeliveryTimeout):
        await sender.send(server.url("/silent"), b"{}", SIGNED)
    # The loop's timers may fire up to its clock resolution early (seen: 0.29988 s).
    assert 0.25 <= time.monotonic() - started < 3.0
    assert (await sender.send(server.url("/ok"), b"{}", SIGNED)).status == 200
    assert server.connections == 2


async def test_a_refused_connection_is_a_connect_error(make: Make) -> None:
    """Nothing listening on the port raises ConnectError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError):
        await make(LENIENT).send(f"http://127.0.0.1:{port}/", b"{}", SIGNED)


async def test_a_hang_up_is_a_connect_error_not_retried(make: Make, server: ScriptedServer) -> None:
    """A fresh connection closed without an answer fails once; the POST is not re-sent."""
    with pytest.raises(ConnectError):
        await make(LENIENT).send(server.url("/hang-up"), b"{}", SIGNED)
    assert server.paths == ["/hang-up"]


async def test_garbage_is_a_protocol_error(make: Make, server: ScriptedServer) -> None:
    """An answer that is not HTTP raises ProtocolError."""
    with pytest.raises(ProtocolError):
        await make(LENIENT).send(server.url("/garbage"), b"{}", SIGNED)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "http:///nohost"])
async def test_invalid_urls_are_blocked(make: Make, url: str) -> None:
    """A URL that is not absolute http(s) raises BlockedDestination (not retriable)."""
    with pytest.raises(BlockedDestination):
        await make(LENIENT).send(url, b"{}", SIGNED)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-id", "msg\r\nX-Evil: 1"),
        ("webhook-id", "msg\nX-Evil: 1"),
        ("webhook-id", "msg\rX-Evil: 1"),
        ("webhook-id", "msg\0"),
        ("X-Evil\r\nX-Other", "1"),
    ],
    ids=["crlf", "lf", "cr", "nul", "in-name"],
)
async def test_header_injection_is_refused(
    make: Make, server: ScriptedServer, name: str, value: str
) -> None:
    """A header name or value with CR, LF or NUL is refused before anything is sent."""
    headers = {**SIGNED, name: value}
    with pytest.raises(DeliveryError) as caught:
        await make(LENIENT).send(server.url("/ok"), b"{}", headers)
    assert caught.value.retriable is False
    assert server.paths == []


# SSRF guard at connect time


async def test_dns_rebinding_is_blocked_at_connect(make: Make, server: ScriptedServer) -> None:
    """A name that resolves to loopback at connect time raises BlockedDestination."""
    resolver = RebindingResolver("127.0.0.1")
    with pytest.raises(BlockedDestination, match=r"127\.0\.0\.1 \(loopback\)"):
        await make(STRICT, resolver=resolver).send(
            server.url("/ok", host="rebind.example.com"), b"{}", SIGNED
        )
    assert resolver.lookups == ["rebind.example.com"]
    assert server.paths == []


async def test_only_checked_addresses_are_connected_to(make: Make, server: ScriptedServer) -> None:
    """Of a mixed answer the forbidden address is dropped and the allowed one used."""
    resolver = MixedResolver(["10.0.0.7", "127.0.0.1"])
    settings = STRICT.replace(allowed_target_cidrs=("127.0.0.0/8",))
    response = await make(settings, resolver=resolver).send(
        server.url("/ok", host="mixed.example.com"), b"{}", SIGNED
    )
    assert response.status == 200
    assert server.paths == ["/ok"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "127.1", "169.254.169.254"]
)
async def test_literal_ip_urls_are_blocked(make: Make, server: ScriptedServer, host: str) -> None:
    """IP-literal and numeric hosts are judged before any connect."""
    with pytest.raises(BlockedDestination):
        await make(STRICT, resolver=RebindingResolver("127.0.0.1")).send(
            server.url("/ok", host=host), b"{}", SIGNED
        )
    assert server.paths == []


# TLS


async def test_tls_with_a_trusted_ca_and_sni(make: Make, certificates: Certificates) -> None:
    """A certificate issued for the name by a trusted CA verifies (name sent by SNI)."""
    state, running = await _tls_server(certificates, certificates.signed)
    try:
        sender = make(
            LENIENT,
            resolver=RebindingResolver("127.0.0.1"),
            ssl_context=certificates.client_context(),
        )
        url = state.url("/ok", host="hook.test", scheme="https")
        assert (await sender.send(url, b"{}", SIGNED)).status == 200
        assert (await sender.send(url, b"{}", SIGNED)).status == 200
    finally:
        state.stopping.set()
        running.close()
    assert state.connections == 1


@pytest.mark.parametrize("which", ["self_signed", "wrong_name"])
async def test_tls_verification_failures(
    make: Make, certificates: Certificates, which: str
) -> None:
    """A self-signed certificate, or one for another name, raises TLSError."""
    state, running = await _tls_server(certificates, getattr(certificates, which))
    try:
        # The self-signed case uses the default trust store, the other the test CA.
        context = certificates.client_context() if which == "wrong_name" else None
        sender = make(LENIENT, resolver=RebindingResolver("127.0.0.1"), ssl_context=context)
        with pytest.raises(TLSError):
            await sender.send(state.url("/ok", host="hook.test", scheme="https"), b"{}", SIGNED)
    finally:
        state.stopping.set()
        running.close()
    assert state.paths == []


class MixedResolver(RebindingResolver):
    """Answers every lookup with several addresses, in the given order."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__(answers[0])
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        (one,) = await super().resolve(host, port, family)
        return [ResolveResult(**{**one, "host": answer}) for answer in self.answers]


# The lean sender's own choices


async def test_a_stale_keep_alive_connection_is_retried_once(server: ScriptedServer) -> None:
    """A reused connection closed before any answer byte is retried on a new connection."""
    sender = HttpSender(LENIENT)
    try:
        for _ in range(2):
            assert (await sender.send(server.url("/drop-second"), b"{}", SIGNED)).status == 200
    finally:
        await sender.close()
    # Request 2 reached the first connection, which hung up; it went again on a second.
    assert server.paths == ["/drop-second"] * 3
    assert server.connections == 2


@pytest.mark.parametrize(("setting", "kind"), [("fast", HttpSender), ("aiohttp", AiohttpSender)])
async def test_make_sender_follows_the_setting(setting: str, kind: type) -> None:
    """HOOKLANE_SENDER picks the sender class."""
    sender = make_sender(LENIENT.replace(sender=setting))
    try:
        assert isinstance(sender, kind)
    finally:
        await sender.close()


async def test_idle_connections_are_bounded(server: ScriptedServer) -> None:
    """Beyond max_idle pooled connections the oldest is closed; the newest stay reusable."""
    sender = HttpSender(LENIENT, resolver=RebindingResolver("127.0.0.1"), max_idle=2)
    try:
        for host in ("a.test", "b.test", "c.test", "c.test", "a.test"):
            assert (await sender.send(server.url("/ok", host=host), b"{}", SIGNED)).ok
    finally:
        await sender.close()
    # a, b, c opened three; c was reused; a's connection had been evicted for c's.
    assert server.connections == 4


def test_an_unknown_sender_is_a_settings_error() -> None:
    """HOOKLANE_SENDER accepts only fast or aiohttp, and says so."""
    with pytest.raises(SettingsError, match="HOOKLANE_SENDER: must be fast or aiohttp"):
        Settings.from_env({"HOOKLANE_SENDER": "curl"})


@pytest.mark.parametrize(
    ("pairs", "kept"),
    [
        ([], ()),
        ([("A", "1"), ("set-cookie", "s=1"), ("B", "2")], (("A", "1"), ("B", "2"))),
        ([(f"H{n}", "v") for n in range(25)], tuple((f"H{n}", "v") for n in range(20))),
        # 2 KiB in all: the header that would overflow ends the list (a prefix is kept).
        (
            [("A", "x" * 1000), ("B", "y" * 1000), ("C", "z" * 100), ("D", "")],
            (("A", "x" * 1000), ("B", "y" * 1000)),
        ),
        ([("Big", "x" * 5000), ("Small", "1")], ()),
    ],
)
def test_bound_headers(pairs: list[tuple[str, str]], kept: tuple[tuple[str, str], ...]) -> None:
    """At most 20 headers and 2 KiB are kept, in order, Set-Cookie never."""
    assert bound_headers(pairs) == kept
