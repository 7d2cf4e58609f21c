"""Operational events: they match the catalog schemas; a webhook never hears about itself."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from dispatcher.kafka.producer import Producer
from dispatcher.messages import operational
from dispatcher.messages.topic_schemas import ValidatorCache
from dispatcher.messages.wire import Event
from dispatcher.settings import Settings
from dispatcher.store.topic_store import get_topic
from tests.conftest import TenantKey
from tests.support.api import api_client
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    wait_until,
)
from tests.support.receiver import Receiver

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SINCE = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
HOOK = "3f0c7e52-8d7b-4c1e-9a57-2b1e4a6b9c10"

BUILT = [
    operational.webhook_disabled("ten_a", HOOK, "the endpoint answered 410 Gone", None, NOW),
    operational.webhook_disabled("ten_a", HOOK, "failing for 5 days", SINCE, NOW),
    operational.webhook_parked("ten_a", HOOK, 120, SINCE, "HTTP 503", NOW),
    operational.webhook_recovered("ten_a", HOOK, 0, SINCE, NOW),
    operational.delivery_gave_up(
        "ten_a", HOOK, "evt-1", "NEXUS.THRESHOLD.STATE.ALERT", 14, None, NOW
    ),
]


@pytest.mark.parametrize("event", BUILT, ids=lambda event: event.topic)
async def test_each_operational_event_satisfies_its_seeded_schema(pool: asyncpg.Pool, event: Event):
    """The builders' data passes the catalog schema the migration seeded for the topic."""
    topic = await get_topic(pool, event.topic)
    assert topic is not None and topic.description
    assert ValidatorCache().data_problems(topic.name, topic.schema, event.data) == []
    assert event.tenant_id == "ten_a" and event.data["webhook_id"] == HOOK
    assert event.triggered_at == int(NOW.timestamp())


def test_one_parking_episode_is_one_event_id():
    """Announcing the same episode again (a crash, another deliverer) gives the same id."""
    later = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    first = operational.webhook_parked("ten_a", HOOK, 10, SINCE, "HTTP 503", NOW)
    again = operational.webhook_parked("ten_a", HOOK, 500, SINCE, "timeout", later)
    next_episode = operational.webhook_parked("ten_a", HOOK, 10, later, "HTTP 503", later)
    assert first.id == again.id != next_episode.id
    recovered = operational.webhook_recovered("ten_a", HOOK, 0, SINCE, later)
    assert recovered.id not in {first.id, next_episode.id}


def test_ids_differ_by_tenant_webhook_and_given_up_event():
    """Distinct facts get distinct ids, so idempotent ingest never merges two of them."""
    ids = {
        operational.delivery_gave_up("ten_a", HOOK, "e1", "T", 3, None, NOW).id,
        operational.delivery_gave_up("ten_a", HOOK, "e2", "T", 3, None, NOW).id,
        operational.delivery_gave_up("ten_b", HOOK, "e1", "T", 3, None, NOW).id,
        operational.delivery_gave_up("ten_a", "other", "e1", "T", 3, None, NOW).id,
    }
    assert len(ids) == 4


@pytest.mark.parametrize(
    ("topic", "subscribers", "expected"),
    [
        (operational.WEBHOOK_PARKED, [HOOK, "b", "c"], ["b", "c"]),
        (operational.WEBHOOK_DISABLED, [HOOK], []),
        (operational.DELIVERY_GAVE_UP, ["b"], ["b"]),
        ("REGISTRATIONS.NEW.SUCCEEDED", [HOOK, "b"], [HOOK, "b"]),
    ],
)
def test_a_webhook_is_never_sent_events_about_itself(topic, subscribers, expected):
    """recipients() drops the webhook an operational event is about; other topics pass through."""
    event = Event("e", topic, "ten_a", 1, {"webhook_id": HOOK})
    assert operational.recipients(event, subscribers) == expected


def test_long_errors_are_cut():
    """A receiver's long error text is not repeated in full to other endpoints."""
    event = operational.webhook_parked("ten_a", HOOK, 1, SINCE, "x" * 5000, NOW)
    assert len(event.data["last_error"]) == operational.MAX_ERROR


async def test_an_operational_event_reaches_the_tenants_other_webhooks_only(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Published as the deliverer will, DISABLED about A reaches B signed, in Commenda's shape."""
    topic = operational.WEBHOOK_DISABLED
    await ensure_mirror_topics(settings, [topic, "REGISTRATIONS.NEW.SUCCEEDED"])
    async with Receiver() as rx:
        about = await create_webhook(pool, settings, tenant.id, rx.url_for("a"), [topic])
        other = await create_webhook(pool, settings, tenant.id, rx.url_for("b"), [topic])
        async with running(settings):
            event = operational.webhook_disabled(
                tenant.id, about.id, "the endpoint answered 410 Gone", None, datetime.now(UTC)
            )
            async with Producer(settings) as producer:
                await producer.publish_event(event)
                await producer.publish_event(event)  # announced twice: delivered once
                marker = await producer.publish(
                    topic, {"webhook_id": "x", "reason": "r"}, tenant.id
                )
            # The marker goes to both: wait for both, they are separate lanes.
            await wait_until(lambda: marker in rx.event_ids("b") and marker in rx.event_ids("a"))
    assert rx.event_ids("b") == [event.id, marker]
    assert rx.event_ids("a") == [marker]  # only the event about A is kept from A
    received = rx.on("b")[0]
    body = received.json()
    assert list(body) == ["id", "topic", "triggered_at", "webhook_id", "data", "api_version"]
    assert (body["topic"], body["webhook_id"], body["data"]) == (topic, other.id, event.data)
    payload = StandardWebhook(other.secret).verify(received.body, received.headers)
    assert payload["data"]["webhook_id"] == about.id


async def test_operational_topics_cannot_be_published_over_the_api(
    settings: Settings, tenant: TenantKey
) -> None:
    """A tenant cannot forge Hooklane's own announcements through POST /events."""
    body = {"topic": operational.WEBHOOK_PARKED, "data": {"webhook_id": "w", "backlog": 1}}
    async with api_client(settings) as client:
        response = await client.post("/events", json=body, headers=tenant.headers)
        answer = await response.json()
    assert response.status == 422
    assert answer["error"]["details"][0]["keyword"] == "reserved"


@pytest.mark.parametrize(
    ("topic", "announced"),
    [
        ("REGISTRATIONS.NEW.SUCCEEDED", True),
        (operational.DELIVERY_GAVE_UP, False),
        (operational.WEBHOOK_PARKED, False),
    ],
)
def test_giving_up_an_announcement_is_not_announced(topic, announced):
    """GAVE_UP is never about an operational event, so two failing webhooks cannot ping-pong."""
    assert operational.announces_gave_up(topic) is announced
