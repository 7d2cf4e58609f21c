"""Helpers for the API tests: an app client, request bodies, schema checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import jsonschema
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.schemas import Schemas
from dispatcher.settings import Settings
from tests.conftest import TenantKey

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


async def post_event(
    client: Client,
    tenant: TenantKey,
    data: dict[str, Any],
    topic: str = "NEXUS.THRESHOLD.STATE.ALERT",
    headers: Mapping[str, str] | None = None,
) -> str:
    """``POST /events`` as ``tenant`` (with ``headers`` besides its key): the event's id."""
    published = await client.post(
        "/events",
        json={"topic": topic, "data": data},
        headers={**tenant.headers, **(headers or {})},
    )
    assert published.status == 202, await published.text()
    event_id: str = (await published.json())["id"]
    return event_id


def webhook_body(url: str, /, **fields: Any) -> dict[str, Any]:
    """A valid POST /webhooks body, with ``fields`` overriding the defaults."""
    return {"url": url, "topics": [TOPIC], **fields}


_SCHEMAS = Schemas()


def assert_matches(component: str, payload: Any) -> None:
    """Fail unless ``payload`` satisfies OpenAPI component schema ``component``."""
    document = _SCHEMAS.openapi
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(payload)
