"""What Apache Kafka shows that tansu hid: sizes, refused tasks and transactions.

- an event over the 1 MiB Hooklane carries is dead-lettered as ``too_large``; every
  other event of its batch is delivered once and the router keeps moving;
- a delivery task the broker refuses for good (here: a deliveries topic created
  elsewhere with a small ``max.message.bytes``) dead-letters its event with the
  broker's reason, and the rest of the batch is delivered once (nothing acknowledged
  is produced twice);
- a transactional publisher's aborted events are never delivered, committed ones are.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from dispatcher.kafka.topic_admin import ensure_topics, internal_topics
from dispatcher.messages.wire import MAX_EVENT_BYTES
from dispatcher.settings import Settings
from tests.conftest import TenantKey, on_kafka
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver
from tests.test_malformed import event, read_dead_letters

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"

pytestmark = pytest.mark.skipif(not on_kafka(), reason="Apache Kafka's limits and transactions")


def reason_of(record: Any) -> str:
    return str(dict(record.headers)["hooklane-reason"].decode())


async def send_batch(settings: Settings, values: list[dict[str, Any] | bytes]) -> list[Any]:
    """Publish ``values`` on one key in one go (one router poll); their metadata."""
    kafka = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 * MAX_EVENT_BYTES
    )
    await kafka.start()
    try:
        futures = [
            await kafka.send(
                settings.mirror_topic(TOPIC),
                value if isinstance(value, bytes) else orjson.dumps(value),
                key=b"one-key",
            )
            for value in values
        ]
        await kafka.flush()
        return [await future for future in futures]
    finally:
        await kafka.stop()


async def deliver(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, values: list[Any], wanted: set[str]
) -> tuple[Counter[str], bool]:
    """Route and deliver ``values``; the ids received (with counts), and the router alive."""
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        try:
            await send_batch(settings, values)
            await wait_until(lambda: wanted <= set(rx.event_ids()), 60, message="the events")
            alive = not router.task.done()
        finally:
            await router.stop()
            await deliverer.stop()
        return Counter(rx.event_ids()), alive


async def test_an_oversized_event_is_dead_lettered_and_the_rest_delivered_once(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    await ensure_mirror_topics(settings, [TOPIC])
    before, after = event(tenant.id), event(tenant.id)
    huge = event(tenant.id, data={"registration_id": "r", "pad": "x" * (MAX_EVENT_BYTES + 1)})
    received, alive = await deliver(
        settings, pool, tenant, [before, huge, after], {before["id"], after["id"]}
    )
    assert alive, "the router stopped"
    assert received == {before["id"]: 1, after["id"]: 1}
    [dead] = await read_dead_letters(settings, 1)
    assert "more than the 1048576 Hooklane carries" in reason_of(dead)
    assert dead.value == orjson.dumps(huge)


async def test_a_task_the_broker_refuses_dead_letters_its_event_only(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    # The deliveries topic made elsewhere, with Kafka's config but a small size limit.
    partitions = internal_topics(settings)
    await ensure_topics(
        settings,
        partitions,
        1,
        {settings.deliveries_topic: {"max.message.bytes": "8192"}},
    )
    await ensure_mirror_topics(settings, [TOPIC])
    small = [event(tenant.id) for _ in range(3)]
    big = event(tenant.id, data={"registration_id": "r", "pad": "y" * 20_000})
    values = [small[0], big, small[1], small[2]]
    wanted = {value["id"] for value in small}
    received, alive = await deliver(settings, pool, tenant, values, wanted)
    assert alive, "the router stopped"
    assert received == dict.fromkeys(wanted, 1), "each small event delivered exactly once"
    [dead] = await read_dead_letters(settings, 1)
    assert "the broker refused the delivery task" in reason_of(dead)
    assert "TooLarge" in reason_of(dead)
    assert orjson.loads(dead.value)["id"] == big["id"]


async def test_aborted_transactions_are_never_delivered_committed_ones_are(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    await ensure_mirror_topics(settings, [TOPIC])
    aborted, committed, later = event(tenant.id), event(tenant.id), event(tenant.id)
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        publisher = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            transactional_id=f"publisher-{uuid.uuid4().hex[:8]}",
        )
        await publisher.start()
        topic = settings.mirror_topic(TOPIC)
        try:
            async with publisher.transaction():
                await publisher.send_and_wait(topic, orjson.dumps(committed), key=b"k")
            await publisher.begin_transaction()
            await publisher.send_and_wait(topic, orjson.dumps(aborted), key=b"k")
            await publisher.abort_transaction()
            # After the aborted one, on the same partition: once it arrives, the aborted
            # event had its turn.
            async with publisher.transaction():
                await publisher.send_and_wait(topic, orjson.dumps(later), key=b"k")
            wanted = {committed["id"], later["id"]}
            await wait_until(lambda: wanted <= set(rx.event_ids()), 60, message="the events")
        finally:
            await publisher.stop()
            await router.stop()
            await deliverer.stop()
    assert rx.event_ids() == [committed["id"], later["id"]]


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
async def test_compressed_tasks_are_delivered(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, codec: str
) -> None:
    """HOOKLANE_KAFKA_COMPRESSION: the router writes compressed tasks the deliverer reads."""
    settings = settings.replace(kafka_compression=codec)
    await ensure_mirror_topics(settings, [TOPIC])
    values = [event(tenant.id) for _ in range(5)]
    wanted = {value["id"] for value in values}
    received, alive = await deliver(settings, pool, tenant, values, wanted)
    assert alive
    assert received == dict.fromkeys(wanted, 1)
