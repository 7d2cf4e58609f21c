"""Helpers for the API tests (no tests here): an app client and a loopback receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.schemas import Schemas
from dispatcher.settings import Settings

# The client type of the tests (TestClient is generic in request and app types).
Client = TestClient[web.Request, web.Application]

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
OTHER_TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"
GIVEN_SECRET = "a-given-secret-0123456789"


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[Client]:
    """A client of a fully started app (pool, sender, producer) on a loopback port."""
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A loopback webhook receiver that records requests and answers ``status``."""

    status: int = 200
    reply: bytes = b"thanks"
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=self.status, body=self.reply)


@asynccontextmanager
async def receiver(status: int = 200) -> AsyncIterator[Receiver]:
    """A running ``Receiver`` at ``receiver.url`` (http://127.0.0.1:<port>/hook)."""
    recv = Receiver(status=status)
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recv.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield recv
    finally:
        await runner.cleanup()


def webhook_body(url: str, /, **fields: Any) -> dict[str, Any]:
    """A valid POST /webhooks body, with ``fields`` overriding the defaults."""
    return {"url": url, "topics": [TOPIC], **fields}


_SCHEMAS = Schemas()


def assert_matches(component: str, payload: Any) -> None:
    """Fail unless ``payload`` satisfies OpenAPI component schema ``component``."""
    document = _SCHEMAS.openapi
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(payload)
