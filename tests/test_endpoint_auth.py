"""``auth``: basic, bearer and OAuth2 client credentials against loopback endpoints."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from dispatcher.delivery.attempt import WebhookTarget, attempt_delivery
from dispatcher.delivery.endpoint_auth import OAuth2ClientCredentials
from dispatcher.delivery.http.lean import HttpSender
from dispatcher.delivery.http.sender import AiohttpSender, ClosableSender
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import Settings
from tests.support.api import Client, api_client, webhook_body
from tests.support.receiver import Receiver

LOCAL = Settings(allow_private_targets=True, delivery_timeout_s=5.0)
EVENT = Event("evt_1", "REGISTRATIONS.NEW.SUCCEEDED", "ten_1", 1700000000, {"n": 1})


@dataclass
class TokenEndpoint:
    """Issues ``tok-1``, ``tok-2``… (``status`` other than 200: refuses); records requests."""

    status: int = 200
    lifetime: float = 3600
    requests: list[tuple[dict[str, str], dict[str, list[str]]]] = field(default_factory=list)
    url: str = ""

    @property
    def issued(self) -> str:
        return f"tok-{len(self.requests)}"

    async def handle(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        self.requests.append((dict(request.headers), form))
        if self.status != 200:
            return web.json_response({"error": "server_error"}, status=self.status)
        return web.json_response({"access_token": self.issued, "expires_in": self.lifetime})


@dataclass
class ProtectedReceiver:
    """Accepts only ``Authorization: Bearer <accepted>``; 401 otherwise."""

    accepted: str | None = None
    seen: list[str | None] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        self.seen.append(authorization)
        ok = self.accepted is not None and authorization == f"Bearer {self.accepted}"
        return web.Response(status=200 if ok else 401)


@asynccontextmanager
async def serving(**routes: Any) -> AsyncIterator[str]:
    """A loopback app with a POST route per keyword (``/name``); yields the base URL."""
    app = web.Application()
    for name, handler in routes.items():
        app.router.add_post(f"/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["fast", "aiohttp"])
async def sender(request: pytest.FixtureRequest) -> AsyncIterator[ClosableSender]:
    made: ClosableSender = HttpSender(LOCAL) if request.param == "fast" else AiohttpSender(LOCAL)
    yield made
    await made.close()


@pytest.fixture
async def endpoints() -> AsyncIterator[tuple[TokenEndpoint, ProtectedReceiver]]:
    tokens, protected = TokenEndpoint(), ProtectedReceiver()
    async with serving(token=tokens.handle, hook=protected.handle) as base:
        tokens.url, protected.url = f"{base}/token", f"{base}/hook"
        yield tokens, protected


def oauth_target(tokens: TokenEndpoint, protected: ProtectedReceiver) -> WebhookTarget:
    auth = OAuth2ClientCredentials(tokens.url, "client 1", "s3cret/+", "hooks:write")
    return WebhookTarget("w", "ten_1", protected.url, ("secret-0123456789",), auth=auth)


async def test_the_token_is_fetched_once_and_reused_until_shortly_before_it_expires(
    sender, endpoints
) -> None:
    """Client-credentials grant with HTTP Basic client auth; reused; refreshed near expiry."""
    tokens, protected = endpoints
    target = oauth_target(tokens, protected)
    clock = Clock()
    protected.accepted = "tok-1"
    for attempt in (1, 2, 3):
        result = await attempt_delivery(sender, target, DeliveryTask("w", EVENT), attempt, clock)
        assert result.success, result
    assert len(tokens.requests) == 1
    headers, form = tokens.requests[0]
    assert form == {"grant_type": ["client_credentials"], "scope": ["hooks:write"]}
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    basic = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert basic == "client%201:s3cret%2F%2B"  # each part form-encoded (RFC 6749 §2.3.1)

    clock.now += 3600 - 29  # within the refresh margin
    protected.accepted = "tok-2"
    result = await attempt_delivery(sender, target, DeliveryTask("w", EVENT), 4, clock)
    assert result.success
    assert len(tokens.requests) == 2
    assert protected.seen == ["Bearer tok-1"] * 3 + ["Bearer tok-2"]


async def test_a_401_refreshes_the_token_once(sender, endpoints) -> None:
    """A revoked token: one refresh and one resend in the same attempt; a second 401 stands."""
    tokens, protected = endpoints
    target = oauth_target(tokens, protected)
    protected.accepted = "tok-1"
    assert (await attempt_delivery(sender, target, DeliveryTask("w", EVENT), 1)).success
    protected.accepted = "tok-2"  # the receiver revoked tok-1
    result = await attempt_delivery(sender, target, DeliveryTask("w", EVENT), 2)
    assert result.success
    assert protected.seen[1:] == ["Bearer tok-1", "Bearer tok-2"]

    protected.accepted = None  # refuses everything now
    result = await attempt_delivery(sender, target, DeliveryTask("w", EVENT), 3)
    assert result.status_code == 401
    assert len(tokens.requests) == 3  # once more, not in a loop
    assert protected.seen[3:] == ["Bearer tok-2", "Bearer tok-3"]


async def test_a_failing_token_endpoint_is_a_failed_retriable_attempt(sender, endpoints) -> None:
    """The attempt fails with TokenError naming the endpoint; the receiver gets nothing."""
    tokens, protected = endpoints
    tokens.status = 500
    result = await attempt_delivery(
        sender, oauth_target(tokens, protected), DeliveryTask("w", EVENT), 1
    )
    assert not result.success
    assert result.error_class == "TokenError"
    assert result.retriable
    assert f"token endpoint {tokens.url} answered HTTP 500" in (result.error or "")
    assert protected.seen == []


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with api_client(settings) as running:
        yield running


async def test_basic_and_bearer_are_sent_and_their_secrets_never_read_back(client, tenant) -> None:
    """The receiver gets Authorization; reads show the type and username only."""
    async with Receiver() as recv:
        basic = {"type": "basic", "username": "hooklane", "password": "pa55word-xyz"}
        created = await client.post(
            "/webhooks", json=webhook_body(recv.url, auth=basic), headers=tenant.headers
        )
        webhook = await created.json()
        assert webhook["auth"] == {"type": "basic", "username": "hooklane"}
        path = f"/webhooks/{webhook['id']}"
        await client.post(f"/webhooks/test/trigger/{webhook['id']}", headers=tenant.headers)
        bearer = {"type": "bearer", "token": "tok-abc-987"}
        updated = await client.post(path, json={"auth": bearer}, headers=tenant.headers)
        assert (await updated.json())["auth"] == {"type": "bearer"}
        await client.post(f"/webhooks/test/trigger/{webhook['id']}", headers=tenant.headers)
        read = await (await client.get(path, headers=tenant.headers)).text()
    expected = "Basic " + base64.b64encode(b"hooklane:pa55word-xyz").decode()
    assert [r.headers["Authorization"] for r in recv.requests] == [expected, "Bearer tok-abc-987"]
    assert "pa55word" not in read and "tok-abc" not in read


async def test_auth_rules(client, tenant, settings) -> None:
    """Authorization is reserved once auth is set; a private token_url is refused like a URL."""
    url = "http://127.0.0.1:9/h"
    bearer = {"type": "bearer", "token": "tok-abc-987"}
    both = webhook_body(url, auth=bearer, headers={"Authorization": "x"})
    refused = await client.post("/webhooks", json=both, headers=tenant.headers)
    assert refused.status == 422
    assert "Authorization" in (await refused.json())["error"]["message"]
    with_header = webhook_body(url, headers={"Authorization": "x"})
    webhook = await (
        await client.post("/webhooks", json=with_header, headers=tenant.headers)
    ).json()
    later = await client.post(
        f"/webhooks/{webhook['id']}", json={"auth": bearer}, headers=tenant.headers
    )
    assert later.status == 422
    bad = await client.post(
        "/webhooks",
        json=webhook_body(url, auth={"type": "bearer", "token": "has space"}),
        headers=tenant.headers,
    )
    assert bad.status == 422
    assert "has space" not in await bad.text()

    async with api_client(settings.replace(allow_private_targets=False)) as strict:
        oauth = {
            "type": "oauth2_client_credentials",
            "token_url": "https://127.0.0.1/token",
            "client_id": "c",
            "client_secret": "s",
        }
        response = await strict.post(
            "/webhooks",
            json=webhook_body("https://1.1.1.1/hook", auth=oauth),
            headers=tenant.headers,
        )
        assert response.status == 422
        assert (await response.json())["error"]["details"][0]["path"] == "/auth/token_url"
