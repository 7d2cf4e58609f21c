"""PAUSED webhooks: routed, buffered in order in the backlog, drained on ENABLED, then live."""

from __future__ import annotations

import asyncpg

from dispatcher.backlog import backlog_sizes
from dispatcher.producer import Producer
from dispatcher.secrets import SecretBox
from dispatcher.settings import Settings
from dispatcher.store.webhooks import update_webhook
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


async def test_paused_webhook_buffers_in_order_and_drains_when_enabled(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Nothing is sent while paused; once ENABLED, every buffered event in order, then new ones."""
    await ensure_mirror_topics(settings, [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)
    async with Receiver() as rx:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC], state="PAUSED")
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        try:
            async with Producer(settings) as producer:
                buffered = [await producer.publish(TOPIC, {"n": n}, tenant.id) for n in range(6)]

                async def all_buffered() -> bool:
                    return (await backlog_sizes(pool, [hook.id])).get(hook.id, 0) == len(buffered)

                await wait_until(all_buffered, within=60)
                assert rx.requests == []  # paused: nothing was sent

                await update_webhook(pool, box, tenant.id, hook.id, {"state": "ENABLED"})
                live = [await producer.publish(TOPIC, {"n": n}, tenant.id) for n in range(6, 9)]
                await wait_until(lambda: len(rx.requests) >= len(buffered) + len(live), within=60)

                async def drained() -> bool:
                    return await backlog_sizes(pool, [hook.id]) == {}

                await wait_until(drained, within=30)
        finally:
            await deliverer.stop()
            await router.stop()
    assert rx.event_ids() == buffered + live
