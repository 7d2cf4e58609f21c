"""End-to-end: producer → mirror topic → router → deliveries → deliverer → receivers.

Everything real: the tansu broker, Postgres, loopback aiohttp receivers.
"""

from __future__ import annotations

import asyncpg

from dispatcher.producer import Producer
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.pipeline_helpers import (
    Receiver,
    create_webhook,
    ensure_mirror_topics,
    start_deliverer,
    start_router,
    wait_until,
)

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
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        try:
            async with Producer(settings) as producer:
                sent = {}
                for n in range(5):
                    data = {"registration_id": f"reg_{n}", "jurisdiction": "US-NY"}
                    event_id = await producer.publish(TOPIC, data, tenant_id=tenant.id)
                    sent[event_id] = data
            await wait_until(lambda: len(rx.on("a")) >= 5 and len(rx.on("b")) >= 5)
        finally:
            await deliverer.stop()
            await router.stop()

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
