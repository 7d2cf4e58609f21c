"""PAUSED webhooks: routed, buffered in order in the backlog, drained on ENABLED, then live."""

from __future__ import annotations

import asyncpg

from dispatcher.delivery.secrets import SecretBox
from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store.backlog import backlog_sizes
from dispatcher.store.webhook_store import update_webhook
from tests.conftest import TenantKey
from tests.support.api import api_client
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"


async def test_paused_webhook_buffers_in_order_and_drains_when_enabled(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Nothing is sent while paused; once ENABLED, every buffered event in order, then new ones."""
    await ensure_mirror_topics(settings, [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)
    async with Receiver() as rx:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC], state="PAUSED")
        async with running(settings), Producer(settings) as producer:
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
    assert rx.event_ids() == buffered + live


async def test_a_paused_webhooks_partition_moving_loses_and_reorders_nothing(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Deliverers joining and leaving while a webhook is paused lose and reorder nothing."""
    await ensure_mirror_topics(settings, [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)
    group = f"hooklane-deliverer-paused-{tenant.id}"

    async def buffered_events() -> int:
        return int(
            await pool.fetchval(
                "SELECT count(DISTINCT event_id) FROM backlog WHERE webhook_id = $1::uuid", hook.id
            )
        )

    async with Receiver() as rx:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC], state="PAUSED")
        router = await start_router(settings)
        one = await start_deliverer(settings, group_id=group)
        two = None
        try:
            async with Producer(settings) as producer:

                async def publish(numbers: range) -> list[str]:
                    return [await producer.publish(TOPIC, {"n": n}, tenant.id) for n in numbers]

                sent = await publish(range(4))
                two = await start_deliverer(settings, group_id=group)
                await wait_until(
                    lambda: bool(one.assignment) and bool(two.assignment),
                    within=60,
                    message="the partitions split between both deliverers",
                )
                sent += await publish(range(4, 8))
                await one.stop()  # every partition moves to the second deliverer
                await wait_until(
                    lambda: len(two.assignment) == settings.deliveries_partitions,
                    within=60,
                    message="rebalance",
                )
                sent += await publish(range(8, 12))

                async def all_buffered() -> bool:
                    return await buffered_events() == len(sent)

                await wait_until(all_buffered, within=60)
                assert rx.requests == []  # still paused: nothing was sent
                await update_webhook(pool, box, tenant.id, hook.id, {"state": "ENABLED"})
                await wait_until(lambda: set(rx.event_ids()) >= set(sent), within=60)
        finally:
            if two is not None:
                await two.stop()
            if not one.task.done():
                await one.stop()
            await router.stop()
    # At-least-once: a rebalance may repeat a delivery; first arrivals keep publish order.
    assert list(dict.fromkeys(rx.event_ids())) == sent


async def test_past_the_pause_limit_the_oldest_are_failed_and_recoverable(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Limit 3, 5 buffered: the 2 oldest fail with pause_limit; recover sends them after all."""
    settings = settings.replace(pause_max_backlog=3)
    await ensure_mirror_topics(settings, [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)

    async def failed_reasons() -> list[str]:
        rows = await pool.fetch(
            "SELECT reason FROM failed_deliveries WHERE webhook_id = $1::uuid ORDER BY id",
            hook.id,
        )
        return [row["reason"] for row in rows]

    async with Receiver() as rx:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC], state="PAUSED")
        async with running(settings):
            async with Producer(settings) as producer:
                sent = [await producer.publish(TOPIC, {"n": n}, tenant.id) for n in range(5)]

            async def trimmed() -> bool:
                return (await backlog_sizes(pool, [hook.id])).get(hook.id) == 3 and (
                    await failed_reasons()
                ) == ["pause_limit"] * 2

            await wait_until(trimmed, within=60, message="3 buffered, 2 failed")
            await update_webhook(pool, box, tenant.id, hook.id, {"state": "ENABLED"})
            await wait_until(lambda: set(rx.event_ids()) >= set(sent[2:]), within=60)
            async with api_client(settings) as client:
                response = await client.post(
                    f"/webhooks/{hook.id}/recover",
                    json={"since": "2000-01-01T00:00:00Z"},
                    headers=tenant.headers,
                )
                assert response.status == 202
                assert await response.json() == {"queued": 2}
            await wait_until(lambda: set(rx.event_ids()) >= set(sent), within=60)
    first_arrivals = list(dict.fromkeys(rx.event_ids()))
    assert first_arrivals == sent[2:] + sent[:2]  # the buffer in order, then the recovered
