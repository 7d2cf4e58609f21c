"""POST /webhooks/test/trigger/{id}: one signed test delivery to a real loopback receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from api.schemas import SCHEMA_DIR
from tests.conftest import TenantKey
from tests.support.api import (
    GIVEN_SECRET,
    OTHER_TOPIC,
    TOPIC,
    Client,
    api_client,
    assert_matches,
    webhook_body,
)
from tests.support.receiver import REPLY, Receiver, failing

# REGISTRATIONS.NEW.SUCCEEDED's first schema example (migration 001).
TOPIC_EXAMPLE = {
    "registration_id": "reg_456",
    "jurisdiction": "US-NY",
    "registration_number": "NY-000123",
}
EVENT_SCHEMA = orjson.loads((SCHEMA_DIR / "event.json").read_bytes())


@pytest.fixture
async def client(settings) -> AsyncIterator[Client]:
    async with api_client(settings) as running:
        yield running


async def register(client: Client, tenant: TenantKey, url: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/webhooks", json=webhook_body(url, **fields), headers=tenant.headers
    )
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def trigger(
    client: Client, tenant: TenantKey, webhook_id: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    path = f"/webhooks/test/trigger/{webhook_id}"
    if body is None:
        response = await client.post(path, headers=tenant.headers)
    else:
        response = await client.post(path, json=body, headers=tenant.headers)
    payload: dict[str, Any] = await response.json()
    return response.status, payload


def commenda_hmac(key: bytes, body: bytes) -> str:
    """The receiver's own check of Commenda-X-Secret, written from the spec."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()


async def test_receiver_verifies_both_signatures_of_a_test_event(client, tenant, pool):
    """The receiver gets the Commenda event object; its HMAC and standardwebhooks both verify."""
    async with Receiver() as recv:
        webhook = await register(client, tenant, recv.url, topics=[TOPIC, OTHER_TOPIC])
        secret = webhook["secret"]
        status, outcome = await trigger(client, tenant, webhook["id"])
    assert status == 200
    assert_matches("TestTriggerResult", outcome)
    assert outcome["delivered"] is True
    assert (outcome["status_code"], outcome["error"], outcome["response_body"]) == (
        200,
        None,
        REPLY,
    )
    assert outcome["duration_ms"] >= 0

    [request] = recv.requests
    key = base64.b64decode(secret.removeprefix("whsec_"))
    assert hmac.compare_digest(
        request.headers["Commenda-X-Secret"], commenda_hmac(key, request.body)
    )
    verified = Webhook(secret).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == outcome["event_id"]
    assert request.headers["Content-Type"] == "application/json"

    event = orjson.loads(request.body)
    assert verified == event
    jsonschema.Draft202012Validator(EVENT_SCHEMA).validate(event)
    assert list(event) == ["id", "topic", "triggered_at", "webhook_id", "data", "api_version"]
    assert event["id"] == outcome["event_id"]
    assert event["topic"] == TOPIC  # the webhook's first topic
    assert event["webhook_id"] == webhook["id"]
    assert event["data"] == TOPIC_EXAMPLE
    assert event["api_version"] == "v1.0"

    row = await pool.fetchrow(
        "SELECT * FROM attempts WHERE webhook_id = $1", uuid.UUID(webhook["id"])
    )
    assert (row["event_id"], row["topic"], row["attempt"], row["outcome"]) == (
        outcome["event_id"],
        TOPIC,
        1,
        "success",
    )
    assert (row["status_code"], row["test"], row["tenant_id"]) == (200, True, tenant.id)


async def test_a_given_secret_signs_with_its_utf8_bytes(client, tenant):
    """A tenant-chosen secret (not whsec_) signs with its UTF-8 bytes for both schemes."""
    async with Receiver() as recv:
        webhook = await register(client, tenant, recv.url, secret=GIVEN_SECRET)
        status, outcome = await trigger(client, tenant, webhook["id"])
    assert status == 200 and outcome["delivered"]
    [request] = recv.requests
    key = GIVEN_SECRET.encode()
    assert request.headers["Commenda-X-Secret"] == commenda_hmac(key, request.body)
    Webhook(key).verify(request.body, request.headers)


async def test_rotated_secret_signs_with_both_until_it_expires(client, tenant):
    """After a secret change, deliveries verify with the new secret and still the old one."""
    async with Receiver() as recv:
        webhook = await register(client, tenant, recv.url)
        old = webhook["secret"]
        new = "whsec_" + base64.b64encode(b"n" * 32).decode()
        response = await client.post(
            f"/webhooks/{webhook['id']}", json={"secret": new}, headers=tenant.headers
        )
        assert response.status == 200
        await trigger(client, tenant, webhook["id"])
    [request] = recv.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)
    assert request.headers["Commenda-X-Secret"] == commenda_hmac(b"n" * 32, request.body)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"x" * 32)).verify(request.body, request.headers)


async def test_body_topic_and_data_override_the_defaults(client, tenant):
    """topic (one of the webhook's) and data from the body are what the receiver gets."""
    async with Receiver() as recv:
        webhook = await register(client, tenant, recv.url, topics=[TOPIC, OTHER_TOPIC])
        status, _ = await trigger(
            client, tenant, webhook["id"], {"topic": OTHER_TOPIC, "data": {"state": "WA"}}
        )
        assert status == 200
        status, _ = await trigger(client, tenant, webhook["id"], {"data": {}})
        assert status == 200
    first, second = (orjson.loads(r.body) for r in recv.requests)
    assert (first["topic"], first["data"]) == (OTHER_TOPIC, {"state": "WA"})
    assert (second["topic"], second["data"]) == (TOPIC, {})


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"topic": OTHER_TOPIC}, "/topic"),
        ({"topic": "lower.case"}, "/topic"),
        ({"data": []}, "/data"),
        ({"data": "x"}, "/data"),
        ({"colour": "red"}, "/colour"),
    ],
)
async def test_invalid_trigger_bodies_are_422_and_send_nothing(client, tenant, body, path):
    """A topic the webhook does not subscribe to, non-object data or unknown fields are 422."""
    async with Receiver() as recv:
        webhook = await register(client, tenant, recv.url)
        status, payload = await trigger(client, tenant, webhook["id"], body)
    assert status == 422
    assert path in {d["path"] for d in payload["error"]["details"]}
    assert recv.requests == []


async def test_a_disabled_webhook_can_be_tested(client, tenant):
    """DISABLED webhooks still receive test events."""
    async with Receiver() as recv:
        webhook = await register(client, tenant, recv.url, state="DISABLED")
        status, outcome = await trigger(client, tenant, webhook["id"])
    assert status == 200 and outcome["delivered"]
    assert len(recv.requests) == 1


async def test_a_failing_receiver_is_reported_not_raised(client, tenant, pool):
    """A 500 from the receiver is a 200 answer with delivered=false, recorded as a failure."""
    async with Receiver(failing(500)) as recv:
        webhook = await register(client, tenant, recv.url)
        status, outcome = await trigger(client, tenant, webhook["id"])
    assert status == 200
    assert (outcome["delivered"], outcome["status_code"], outcome["error"]) == (
        False,
        500,
        "HTTP 500",
    )
    assert outcome["response_body"] == REPLY
    outcome_row = await pool.fetchval(
        "SELECT outcome FROM attempts WHERE webhook_id = $1 AND test", uuid.UUID(webhook["id"])
    )
    assert outcome_row == "failure"


async def test_an_unreachable_receiver_is_reported(client, tenant):
    """Connection refused: delivered=false, no status code, an error message."""
    with socket.socket() as sock:  # a port that was free a moment ago and now is not listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    webhook = await register(client, tenant, f"http://127.0.0.1:{port}/hook")
    status, outcome = await trigger(client, tenant, webhook["id"])
    assert status == 200
    assert outcome["delivered"] is False
    assert outcome["status_code"] is None
    assert outcome["error"]


async def test_trigger_unknown_webhook_is_404(client, tenant):
    """An unknown id answers 404."""
    status, payload = await trigger(client, tenant, str(uuid.uuid4()))
    assert status == 404
    assert payload["error"]["code"] == "not_found"
