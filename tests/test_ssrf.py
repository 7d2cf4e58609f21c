"""The connect-time SSRF guard, redirects and response caps of the real AiohttpSender.

A receiver listens on 127.0.0.1; an aiohttp resolver the test controls plays DNS, so
no real name is resolved and no traffic leaves loopback.
"""

from __future__ import annotations

import socket
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher.delivery.attempt import WebhookTarget, attempt_delivery
from dispatcher.delivery.failures import BlockedDestination
from dispatcher.delivery.http.sender import MAX_RESPONSE_BODY, AiohttpSender
from dispatcher.delivery.http.ssrf import check_target_url
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import Settings

STRICT = Settings(allow_private_targets=False, delivery_timeout_s=5.0)
LENIENT = Settings(allow_private_targets=True, delivery_timeout_s=5.0)
STREAMED_BYTES = 10 * 1024 * 1024


class RebindingResolver(AbstractResolver):
    """Answers every lookup with ``answer`` (an attacker's DNS after rebinding)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=self.answer,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=0,
            )
        ]

    async def close(self) -> None:
        pass


@dataclass
class Receiver:
    """A loopback receiver that records every request path it gets."""

    port: int
    paths: list[str] = field(default_factory=list)

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    state = Receiver(port=0)

    async def hook(request: web.Request) -> web.StreamResponse:
        state.paths.append(request.path)
        await request.read()
        return web.Response(status=200, text="ok")

    async def redirect(request: web.Request) -> web.StreamResponse:
        state.paths.append(request.path)
        return web.Response(status=302, headers={"Location": state.url(path="/hook")})

    async def huge(request: web.Request) -> web.StreamResponse:
        state.paths.append(request.path)
        response = web.StreamResponse(status=200)
        response.content_length = STREAMED_BYTES
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(STREAMED_BYTES // len(chunk)):
                await response.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass  # the sender hung up after its capped read: that is the point
        return response

    app.router.add_post("/hook", hook)
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/huge", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


async def test_dns_rebinding_is_blocked_at_connect(receiver: Receiver) -> None:
    """A name public at registration but loopback at connect raises BlockedDestination."""

    async def registration_dns(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    url = receiver.url(host="rebind.example.com")
    await check_target_url(url.replace("http://", "https://"), STRICT, registration_dns)
    resolver = RebindingResolver("127.0.0.1")
    sender = AiohttpSender(STRICT, resolver=resolver)
    try:
        with pytest.raises(BlockedDestination, match=r"127\.0\.0\.1 \(loopback\)"):
            await sender.send(url, b"{}", {})
    finally:
        await sender.close()
    assert resolver.lookups == ["rebind.example.com"]
    assert receiver.paths == []


async def test_allowlisted_cidr_passes_the_connect_guard(receiver: Receiver) -> None:
    """The same rebinding setup delivers when loopback is in the allowlist (control)."""
    settings = STRICT.replace(allowed_target_cidrs=("127.0.0.0/8",))
    sender = AiohttpSender(settings, resolver=RebindingResolver("127.0.0.1"))
    try:
        response = await sender.send(receiver.url(host="rebind.example.com"), b"{}", {})
    finally:
        await sender.close()
    assert response.status == 200
    assert receiver.paths == ["/hook"]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "127.1", "169.254.169.254"],
)
async def test_literal_ip_urls_are_blocked(receiver: Receiver, host: str) -> None:
    """IP-literal hosts never reach the resolver, so they are checked before connecting."""
    resolver = RebindingResolver("127.0.0.1")
    sender = AiohttpSender(STRICT, resolver=resolver)
    try:
        with pytest.raises(BlockedDestination):
            await sender.send(receiver.url(host=host), b"{}", {})
    finally:
        await sender.close()
    assert receiver.paths == []


async def test_blocked_destination_is_recorded_as_not_retriable(receiver: Receiver) -> None:
    """attempt_delivery records a blocked connect as a non-retriable BlockedDestination."""
    sender = AiohttpSender(STRICT, resolver=RebindingResolver("10.0.0.7"))
    target = WebhookTarget(
        id=str(uuid.uuid4()),
        tenant_id="tenant-a",
        url="https://rebind.example.com/hook",
        secrets=("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",),
    )
    event = Event(str(uuid.uuid4()), "REGISTRATIONS.NEW.SUCCEEDED", "tenant-a", 1700000000, {})
    try:
        result = await attempt_delivery(sender, target, DeliveryTask(target.id, event), 1)
    finally:
        await sender.close()
    assert result.error_class == "BlockedDestination"
    assert result.retriable is False
    assert result.status_code is None
    assert "10.0.0.7" in (result.error or "")


async def test_redirects_are_answers_not_followed(receiver: Receiver) -> None:
    """A 302 is recorded as a failed (non-2xx) attempt and its Location is not fetched."""
    sender = AiohttpSender(LENIENT)
    target = WebhookTarget(
        id=str(uuid.uuid4()),
        tenant_id="tenant-a",
        url=receiver.url(path="/redirect"),
        secrets=("s3cret",),
    )
    event = Event(str(uuid.uuid4()), "REGISTRATIONS.NEW.SUCCEEDED", "tenant-a", 1700000000, {})
    try:
        result = await attempt_delivery(sender, target, DeliveryTask(target.id, event), 1)
    finally:
        await sender.close()
    assert result.status_code == 302
    assert result.success is False
    assert result.error == "HTTP 302"
    assert receiver.paths == ["/redirect"]


async def test_response_bodies_are_capped(receiver: Receiver) -> None:
    """A receiver streaming 10 MiB yields a 4 KiB body and bounded sender memory."""
    sender = AiohttpSender(LENIENT)
    tracemalloc.start()
    try:
        response = await sender.send(receiver.url(path="/huge"), b"{}", {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await sender.close()
    assert response.status == 200
    assert len(response.body) == MAX_RESPONSE_BODY
    # Reading the whole stream would need > 10 MiB; the capped read stays far below.
    assert peak < STREAMED_BYTES // 4
