"""``HOOKLANE_EGRESS_PROXY``: deliveries and token requests leave only through the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from yarl import URL

from dispatcher.delivery.attempt import WebhookTarget, attempt_delivery
from dispatcher.delivery.client_certificate import check_client_certificate
from dispatcher.delivery.endpoint_auth import OAuth2ClientCredentials
from dispatcher.delivery.failures import ConnectError
from dispatcher.delivery.http.lean import HttpSender
from dispatcher.delivery.http.sender import AiohttpSender, ClosableSender
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import Settings, SettingsError
from tests.support.client_tls import MutualTLS, mtls_receiver

EVENT = Event("evt_1", "REGISTRATIONS.NEW.SUCCEEDED", "ten_1", 1700000000, {"n": 1})
# Names only the proxy can resolve: a connection that skipped it could not even start.
PROXY_ONLY = {"hook.test": "127.0.0.1", "tokens.test": "127.0.0.1"}


@dataclass
class ConnectProxy:
    """A loopback HTTP proxy: CONNECT tunnels and absolute-form requests, piped as is."""

    refuse: bool = False
    requested: list[str] = field(default_factory=list)  # CONNECT authorities / URLs
    upstream_ports: set[int] = field(default_factory=set)  # its own sockets' ports
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
            self.requested.append(target)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
            else:
                parsed = URL(target)
                host, port = parsed.host or "", str(parsed.port)
            if self.refuse:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection(
                PROXY_ONLY.get(host, host), int(port)
            )
            self.upstream_ports.add(up_writer.get_extra_info("sockname")[1])
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    with contextlib.suppress(OSError):
        sink.write_eof()


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()


@dataclass
class PeerRecorder:
    """A receiver app that records the client port of every request's connection."""

    peers: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername")[1])
        if request.path == "/token":
            return web.json_response({"access_token": "tok-1", "expires_in": 3600})
        return web.Response(text="ok")


@asynccontextmanager
async def serving(app_handler: PeerRecorder, ssl_context=None) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/{name}", app_handler.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def _sender(kind: str, proxy: str, tls: MutualTLS | None = None) -> ClosableSender:
    settings = Settings(allow_private_targets=True, delivery_timeout_s=5.0, egress_proxy=proxy)
    factory = tls.trust if tls is not None else None
    if kind == "fast":
        return HttpSender(settings, tls_factory=factory)
    return AiohttpSender(settings, tls_factory=factory)


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_deliveries_and_token_requests_leave_only_through_the_proxy(kind: str) -> None:
    """Names only the proxy resolves are reached; every receiver connection is the proxy's."""
    recorder = PeerRecorder()
    async with connect_proxy() as proxy, serving(recorder) as port:
        sender = _sender(kind, proxy.url)
        auth = OAuth2ClientCredentials(f"http://tokens.test:{port}/token", "c", "s")
        target = WebhookTarget("w", "t", f"http://hook.test:{port}/hook", ("s" * 16,), auth=auth)
        try:
            for attempt in (1, 2):
                result = await attempt_delivery(sender, target, DeliveryTask("w", EVENT), attempt)
                assert result.success, result
        finally:
            await sender.close()
    assert len(recorder.peers) == 3  # one token request, two deliveries
    assert set(recorder.peers) <= proxy.upstream_ports  # never a direct connection
    assert any("tokens.test" in requested for requested in proxy.requested)
    assert any("hook.test" in requested for requested in proxy.requested)


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_https_with_a_client_certificate_goes_through_a_connect_tunnel(
    kind: str, tmp_path: Path
) -> None:
    """TLS (server verified, client certificate presented) runs inside the CONNECT tunnel."""
    tls = MutualTLS.make(tmp_path)
    certificate = check_client_certificate(
        *tls.clients.issue(), datetime.datetime.now(datetime.UTC)
    )
    async with connect_proxy() as proxy, mtls_receiver(tls) as recv:
        port = URL(recv.url).port
        sender = _sender(kind, proxy.url, tls)
        try:
            response = await sender.send(f"https://hook.test:{port}/hook", b"{}", {}, certificate)
        finally:
            await sender.close()
    assert response.status == 200
    assert proxy.requested == [f"hook.test:{port}"]
    assert len(recv.requests) == 1


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_a_refusing_proxy_fails_the_attempt_retriably(kind: str) -> None:
    """The proxy's 403 is a connection failure: retried with the usual backoff, nothing lost."""
    recorder = PeerRecorder()
    async with connect_proxy() as proxy, serving(recorder) as port:
        proxy.refuse = True
        sender = _sender(kind, proxy.url)
        target = WebhookTarget("w", "t", f"https://hook.test:{port}/hook", ("s" * 16,))
        try:
            result = await attempt_delivery(sender, target, DeliveryTask("w", EVENT), 1)
        finally:
            await sender.close()
    assert not result.success and result.retriable
    assert recorder.peers == []
    if kind == "fast":
        assert result.error_class == ConnectError.__name__
        assert "403" in (result.error or "")


@pytest.mark.parametrize(
    "value", ["https://proxy:3128", "http://proxy", "http://u:p@proxy:3128", "proxy:3128"]
)
def test_the_proxy_setting_must_be_http_host_port(value: str) -> None:
    """A malformed HOOKLANE_EGRESS_PROXY stops the process at start, naming the variable."""
    with pytest.raises(SettingsError, match="HOOKLANE_EGRESS_PROXY"):
        Settings.from_env({"HOOKLANE_EGRESS_PROXY": value})
    assert Settings.from_env({"HOOKLANE_EGRESS_PROXY": "http://proxy:3128"}).egress_proxy
