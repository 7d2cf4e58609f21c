"""Hostile request bodies get a 4xx with the error envelope, never a 500.

Depth and NUL characters follow the one rule of ``dispatcher.messages.json_limits`` (the same
as for Kafka events); each answer names the place in the body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dispatcher.messages.json_limits import MAX_DATA_DEPTH
from tests.support.api import TOPIC, Client, api_client
from tests.test_json_limits import deep_json

DATA = b'{"registration_id":"reg_9","jurisdiction":"US-TX"}'


@pytest.fixture
async def client(internal_topics) -> AsyncIterator[Client]:
    async with api_client(internal_topics) as running:
        yield running


def webhook(name: bytes = b'"n"', filter_: bytes = b"null") -> bytes:
    url = b'"https://example.com/hook"'
    return (
        b'{"url":'
        + url
        + b',"topics":["'
        + TOPIC.encode()
        + b'"],"name":'
        + name
        + b',"filter":'
        + filter_
        + b"}"
    )


@pytest.mark.parametrize(
    ("path", "body", "pointer", "keyword"),
    [
        ("/webhooks", webhook(name=deep_json(1000)), "/name", "too_deep"),
        ("/webhooks", webhook(name=b'"a\\u0000b"'), "/name", "nul_character"),
        ("/webhooks", webhook(filter_=b'{"data.x":"a\\u0000"}'), "/filter/data.x", "nul_character"),
        (
            "/events",
            b'{"topic":"' + TOPIC.encode() + b'","data":{"x":' + deep_json(400) + b"}}",
            "/data/x",
            "too_deep",
        ),
        (
            "/events",
            b'{"topic":"' + TOPIC.encode() + b'","data":' + DATA + b',"id":"e\\u0000"}',
            "/id",
            "nul_character",
        ),
        (
            "/events",
            b'{"topic":"' + TOPIC.encode() + b'","data":{"x\\u0000":1}}',
            "/data/x\x00",
            "nul_character",
        ),
    ],
)
async def test_hostile_bodies_are_422_with_the_envelope(
    client, tenant, path, body, pointer, keyword
):
    """Nesting past the limit and NUL characters are 422 with the place named."""
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = await client.post(path, data=body, headers=headers)
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "validation_failed"
    detail = error["details"][0]
    assert detail["keyword"] == keyword
    assert detail["path"] == pointer or detail["path"].startswith(pointer + "/0/0/")


async def test_data_at_the_depth_limit_is_published(client, tenant):
    """POST /events accepts data nested exactly MAX_DATA_DEPTH levels (as the router does)."""
    data = b'{"registration_id":"r","jurisdiction":"US","x":' + deep_json(MAX_DATA_DEPTH - 1) + b"}"
    body = b'{"topic":"' + TOPIC.encode() + b'","data":' + data + b"}"
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = await client.post("/events", data=body, headers=headers)
    assert response.status == 202, await response.text()
