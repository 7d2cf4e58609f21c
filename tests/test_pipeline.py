"""End-to-end: producer → mirror topic → router → deliveries → deliverer → receivers.

Everything real: the tansu broker, Postgres, loopback aiohttp receivers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import defaultdict

import asyncpg
from standardwebhooks.webhooks import Webhook as StandardWebhook

from dispatcher.kafka.producer import Outgoing, Producer
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    wait_until,
)
from tests.support.receiver import Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
OTHER_TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"


async def test_fan_out_reaches_exactly_the_subscribed_enabled_webhooks(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """Each event reaches every ENABLED subscriber of its tenant once, in Commenda's shape."""
    await ensure_mirror_topics(settings, [TOPIC, OTHER_TOPIC])
    async with Receiver() as rx:
        first = await create_webhook(pool, settings, tenant.id, rx.url_for("a"), [TOPIC])
        second = await create_webhook(
            pool, settings, tenant.id, rx.url_for("b"), [TOPIC, OTHER_TOPIC]
        )
        await create_webhook(
            pool, settings, tenant.id, rx.url_for("disabled"), [TOPIC], state="DISABLED"
        )
        await create_webhook(pool, settings, tenant.id, rx.url_for("unsubscribed"), [OTHER_TOPIC])
        await create_webhook(pool, settings, other_tenant.id, rx.url_for("other"), [TOPIC])
        async with running(settings):
            async with Producer(settings) as producer:
                sent = {}
                for n in range(5):
                    data = {"registration_id": f"reg_{n}", "jurisdiction": "US-NY"}
                    event_id = await producer.publish(TOPIC, data, tenant_id=tenant.id)
                    sent[event_id] = data
            await wait_until(lambda: len(rx.on("a")) >= 5 and len(rx.on("b")) >= 5)

    for path, webhook in (("a", first), ("b", second)):
        bodies = [r.json() for r in rx.on(path)]
        assert sorted(b["id"] for b in bodies) == sorted(sent)
        for body in bodies:
            assert list(body) == [
                "id",
                "topic",
                "triggered_at",
                "webhook_id",
                "data",
                "api_version",
            ]
            assert body["topic"] == TOPIC
            assert body["webhook_id"] == webhook.id
            assert body["data"] == sent[body["id"]]
            assert body["api_version"] == "v1.0"
            assert isinstance(body["triggered_at"], int)
    assert not rx.on("disabled") and not rx.on("unsubscribed") and not rx.on("other")


async def test_per_key_order_is_publish_order_across_keys_partitions_and_webhooks(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """For every webhook and ordering key, events arrive in the order they were published."""
    await ensure_mirror_topics(settings, [TOPIC])
    keys = [f"customer-{n}" for n in range(6)]  # spread over the 4 source partitions
    per_key = 15
    async with Receiver() as rx:
        webhooks = [
            await create_webhook(pool, settings, tenant.id, rx.url_for(f"w{n}"), [TOPIC])
            for n in range(3)
        ]
        async with running(settings):
            published: dict[str, list[str]] = defaultdict(list)
            async with Producer(settings) as producer:
                for round_no in range(per_key):
                    batch = [
                        Outgoing(TOPIC, {"key": key, "n": round_no}, tenant.id, key=key)
                        for key in keys
                    ]
                    ids = await producer.publish_many(batch)
                    for key, event_id in zip(keys, ids, strict=True):
                        published[key].append(event_id)
            total = len(keys) * per_key
            await wait_until(lambda: all(len(rx.on(f"w{n}")) >= total for n in range(3)))

    for n in range(len(webhooks)):
        arrived: dict[str, list[str]] = defaultdict(list)
        for request in rx.on(f"w{n}"):
            body = request.json()
            arrived[body["data"]["key"]].append(body["id"])
        assert arrived == published


def _independent_commenda_signature(secret: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _independent_standard_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def test_both_signatures_verify_with_standardwebhooks_and_plain_hmac(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Delivered requests carry Commenda-X-Secret and Standard Webhooks signatures that verify."""
    await ensure_mirror_topics(settings, [TOPIC])
    async with Receiver() as rx:
        webhook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        async with running(settings):
            async with Producer(settings) as producer:
                event_ids = [
                    await producer.publish(TOPIC, {"registration_id": f"r{n}"}, tenant.id)
                    for n in range(3)
                ]
            await wait_until(lambda: len(rx.requests) >= 3)

    verifier = StandardWebhook(webhook.secret)
    for request in rx.requests:
        headers = request.headers
        assert headers["content-type"] == "application/json"
        assert headers["webhook-id"] == request.event_id
        payload = verifier.verify(request.body, headers)  # raises on a bad signature
        assert payload["webhook_id"] == webhook.id
        assert headers["commenda-x-secret"] == _independent_commenda_signature(
            webhook.secret, request.body
        )
        assert headers["webhook-signature"] == _independent_standard_signature(
            webhook.secret, headers["webhook-id"], headers["webhook-timestamp"], request.body
        )
    assert sorted(r.event_id for r in rx.requests) == sorted(event_ids)


async def test_a_topic_created_after_the_router_started_is_routed(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """The router subscribes by pattern: a mirror topic that appears later is picked up."""
    await ensure_mirror_topics(settings, [TOPIC])
    late_topic = "EXEMPTION_CERTIFICATES.VERIFICATION.SUCCEEDED"
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [late_topic])
        async with running(settings):
            await ensure_mirror_topics(settings, [late_topic])  # as `topics ensure` would
            async with Producer(settings) as producer:
                event_id = await producer.publish(late_topic, {"certificate_id": "c1"}, tenant.id)
            await wait_until(lambda: len(rx.requests) >= 1, within=60)
    assert rx.event_ids() == [event_id]
    assert rx.requests[0].json()["topic"] == late_topic
