"""GET /topics (the catalog) and POST /events (publish over HTTP onto the real broker)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer

from dispatcher.messages.wire import Event
from dispatcher.store.topic_store import add_topic
from tests.support.api import TOPIC, Client, api_client, assert_matches

SEEDED = {
    "REGISTRATIONS.EXISTING.VALIDATION.FAILED",
    "REGISTRATIONS.EXISTING.VALIDATION.SUCCEEDED",
    "REGISTRATIONS.NEW.SUCCEEDED",
    "REGISTRATIONS.NEW.INVALID",
    "EXEMPTION_CERTIFICATES.VERIFICATION.FAILED",
    "EXEMPTION_CERTIFICATES.VERIFICATION.SUCCEEDED",
    "EXEMPTION_CERTIFICATES.EXPIRATION",
    "NEXUS.THRESHOLD.STATE.ALERT",
    "INCORPORATION_REQUEST.COMPLETED",
}
DATA = {"registration_id": "reg_9", "jurisdiction": "US-TX"}


@pytest.fixture
async def client(internal_topics) -> AsyncIterator[Client]:
    async with api_client(internal_topics) as running:
        yield running


async def test_topics_lists_the_seeded_catalog(client, tenant):
    """GET /topics has Commenda's nine topics, each with a description and a data schema."""
    response = await client.get("/topics", headers=tenant.headers)
    assert response.status == 200
    payload = await response.json()
    assert_matches("TopicList", payload)
    by_name = {topic["name"]: topic for topic in payload["data"]}
    assert set(by_name) >= SEEDED
    for name in SEEDED:
        assert by_name[name]["description"]
        assert by_name[name]["schema"]["type"] == "object"
        assert by_name[name]["schema"]["examples"]


async def test_an_operator_topic_appears_and_can_be_subscribed(client, tenant, pool):
    """A topic added to the catalog is listed and accepted in a webhook's topics."""
    name = f"OPERATOR.ADDED_{uuid.uuid4().hex[:8].upper()}"
    await add_topic(pool, name, "added by a test", {"type": "object"})
    names = {
        t["name"]
        for t in (await (await client.get("/topics", headers=tenant.headers)).json())["data"]
    }
    assert name in names
    response = await client.post(
        "/webhooks", json={"url": "http://127.0.0.1:9/h", "topics": [name]}, headers=tenant.headers
    )
    assert response.status == 201


async def read_one(settings, topic: str) -> tuple[bytes | None, bytes]:
    consumer = AIOKafkaConsumer(
        settings.mirror_topic(topic),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            message = await consumer.getone()
    finally:
        await consumer.stop()
    return message.key, message.value


async def test_publish_puts_the_event_on_the_topic(client, tenant, settings):
    """POST /events answers 202 with the id, and the Kafka message is that event keyed by tenant."""
    response = await client.post(
        "/events", json={"topic": TOPIC, "data": DATA}, headers=tenant.headers
    )
    assert response.status == 202
    accepted = await response.json()
    assert_matches("EventAccepted", accepted)
    key, value = await read_one(settings, TOPIC)
    event = Event.from_message(value, expected_topic=TOPIC)
    assert (event.id, event.tenant_id, event.data) == (accepted["id"], tenant.id, DATA)
    assert key == tenant.id.encode()


async def test_publish_honours_id_key_and_own_tenant_id(client, tenant, settings):
    """A given id, ordering key and the caller's own tenant_id are used as given."""
    body = {
        "topic": TOPIC,
        "data": DATA,
        "id": "evt_fixed_1",
        "key": "reg_9",
        "tenant_id": tenant.id,
    }
    response = await client.post("/events", json=body, headers=tenant.headers)
    assert response.status == 202
    assert (await response.json())["id"] == "evt_fixed_1"
    key, value = await read_one(settings, TOPIC)
    assert key == b"reg_9"
    assert Event.from_message(value).id == "evt_fixed_1"


async def test_publish_for_another_tenant_is_forbidden(client, tenant, other_tenant):
    """tenant_id must be the caller's own: 403 otherwise."""
    body = {"topic": TOPIC, "data": DATA, "tenant_id": other_tenant.id}
    response = await client.post("/events", json=body, headers=tenant.headers)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"topic": "NO.SUCH.TOPIC", "data": DATA}, "/topic"),
        ({"topic": "lower", "data": DATA}, "/topic"),
        ({"topic": TOPIC}, ""),
        ({"topic": TOPIC, "data": []}, "/data"),
        ({"topic": TOPIC, "data": {"jurisdiction": "US-TX"}}, "/data"),
        ({"topic": TOPIC, "data": {"registration_id": 5}}, "/data/registration_id"),
        ({"topic": TOPIC, "data": DATA, "id": ""}, "/id"),
        ({"topic": TOPIC, "data": DATA, "key": 3}, "/key"),
        ({"topic": TOPIC, "data": DATA, "extra": 1}, "/extra"),
    ],
)
async def test_publish_rejects_invalid_events(client, tenant, body, path):
    """Unknown topics, data that breaks the topic's schema and bad fields are 422."""
    response = await client.post("/events", json=body, headers=tenant.headers)
    assert response.status == 422
    assert path in {d["path"] for d in (await response.json())["error"]["details"]}


async def test_without_a_broker_webhooks_work_and_publishing_is_503(settings, tenant):
    """With no Kafka configured the API serves webhooks; POST /events answers 503."""
    async with api_client(settings.replace(kafka_bootstrap_servers=None)) as client:
        response = await client.post(
            "/webhooks",
            json={"url": "http://127.0.0.1:9/h", "topics": [TOPIC]},
            headers=tenant.headers,
        )
        assert response.status == 201
        response = await client.post(
            "/events", json={"topic": TOPIC, "data": DATA}, headers=tenant.headers
        )
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "unavailable"
