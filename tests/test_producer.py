"""The producer: event messages on mirror topics, keyed for ordering; delivery tasks."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from dispatcher.kafka.producer import MissingTopicError, Outgoing, Producer
from dispatcher.kafka.topic_admin import missing_topics
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import Settings

TOPIC = "INCORPORATION_REQUEST.COMPLETED"


async def _read_all(settings: Settings, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(records) < count and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        partitions = consumer.partitions_for_topic(topic)
    finally:
        await consumer.stop()
    assert partitions == set(range(settings.topic_partitions)) or topic.endswith("deliveries")
    return records


async def test_publish_writes_the_event_message_keyed_by_tenant(
    settings: Settings, internal_topics: Settings
) -> None:
    """publish() builds {id, topic, tenant_id, triggered_at, data} on <prefix><TOPIC>."""
    before = int(time.time())
    async with Producer(settings) as producer:
        event_id = await producer.publish(TOPIC, {"entity_name": "Acme"}, tenant_id="ten_1")
        fixed = await producer.publish(TOPIC, {}, tenant_id="ten_1", key="k", event_id="evt-1")
    records = await _read_all(settings, settings.mirror_topic(TOPIC), 2)
    by_id = {orjson.loads(r.value)["id"]: r for r in records}
    first, second = by_id[event_id], by_id[fixed]
    assert first.key == b"ten_1"
    value = orjson.loads(first.value)
    assert value == {
        "id": event_id,
        "topic": TOPIC,
        "tenant_id": "ten_1",
        "triggered_at": value["triggered_at"],
        "data": {"entity_name": "Acme"},
    }
    assert before <= value["triggered_at"] <= int(time.time())
    assert Event.from_message(first.value, expected_topic=TOPIC).id == event_id
    assert (fixed, second.key, orjson.loads(second.value)["id"]) == ("evt-1", b"k", "evt-1")


async def test_publish_many_keeps_per_key_order(
    settings: Settings, internal_topics: Settings
) -> None:
    """A batch is acknowledged together and each key's events stay in order in one partition."""
    items = [Outgoing(TOPIC, {"n": n}, "ten_1", key=f"k{n % 3}") for n in range(30)]
    async with Producer(settings) as producer:
        ids = await producer.publish_many(items)
    records = await _read_all(settings, settings.mirror_topic(TOPIC), 30)
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(ids)
    for key in ("k0", "k1", "k2"):
        mine = [r for r in records if r.key == key.encode()]
        assert len({r.partition for r in mine}) == 1
        numbers = [orjson.loads(r.value)["data"]["n"] for r in sorted(mine, key=lambda r: r.offset)]
        assert numbers == sorted(numbers) and len(numbers) == 10


async def test_publish_never_creates_a_topic(settings: Settings) -> None:
    """A topic without a Kafka topic (a typo) is refused with one line; none is created."""
    typo = "REGISTRATION.NEW.SUCCEEDED"
    async with Producer(settings) as producer:
        with pytest.raises(MissingTopicError, match=re.escape(settings.mirror_topic(typo))):
            await producer.publish(typo, {}, tenant_id="ten_1")
        with pytest.raises(MissingTopicError, match="deliveries"):  # migrate's to create
            await producer.enqueue(DeliveryTask("wh-1", Event("e", typo, "t", 1, {}), "test"))
    assert settings.kafka_bootstrap_servers is not None
    names = [settings.mirror_topic(typo), settings.deliveries_topic]
    assert await missing_topics(settings, names) == names


async def test_enqueue_writes_a_delivery_task_keyed_by_webhook(
    settings: Settings, internal_topics: Settings
) -> None:
    """enqueue() puts a DeliveryTask on the deliveries topic, keyed by webhook id."""
    task = DeliveryTask("wh-1", Event("evt-9", TOPIC, "ten_1", 1, {"a": 1}), "redelivery")
    async with Producer(settings) as producer:
        await producer.enqueue(task)
    [record] = await _read_all(settings, settings.deliveries_topic, 1)
    assert record.key == b"wh-1"
    assert DeliveryTask.from_message(record.value) == task


@pytest.mark.parametrize("partitions", [1, 4, 16, 7])
@pytest.mark.parametrize(
    "key", [b"ten_1", b"0b5d7c1e-2f51-4c55-9a44-5a1f6bb6b7e1", b"", "ünïcode".encode()]
)
def test_caching_partitioner_matches_the_default(key: bytes, partitions: int) -> None:
    """The memoised partitioner picks exactly the Java-compatible default partition."""
    from aiokafka.partitioner import DefaultPartitioner

    from dispatcher.kafka.producer import CachingPartitioner

    all_partitions = list(range(partitions))
    cached = CachingPartitioner(max_keys=2)
    expected = DefaultPartitioner()(key, all_partitions, all_partitions)
    assert cached(key, all_partitions, all_partitions) == expected
    assert cached(key, all_partitions, all_partitions) == expected  # from the cache
    for other in (b"a", b"b", b"c"):  # overflow clears the cache, answers stay right
        cached(other, all_partitions, all_partitions)
    assert cached(key, all_partitions, all_partitions) == expected


async def test_send_keyed_uses_the_keys_partition_and_keeps_order_across_batches(
    settings: Settings, internal_topics: Settings
) -> None:
    """send_keyed() lands each key where send(key=) would, in order, over several batches."""
    from aiokafka.partitioner import DefaultPartitioner

    # 3 keys x 200 messages of 2 KB: each key's share spans several 128 KiB batches.
    messages = [
        (f"wh-{n % 3}".encode(), orjson.dumps({"n": n, "pad": "x" * 2000})) for n in range(600)
    ]
    async with Producer(settings) as producer:
        futures = await producer.send_keyed(settings.deliveries_topic, messages)
        await asyncio.gather(*futures)
    records = await _read_all(settings, settings.deliveries_topic, 600)
    partitions = list(range(settings.deliveries_partitions))
    for key in (b"wh-0", b"wh-1", b"wh-2"):
        mine = sorted((r for r in records if r.key == key), key=lambda r: r.offset)
        assert {r.partition for r in mine} == {DefaultPartitioner()(key, partitions, partitions)}
        numbers = [orjson.loads(r.value)["n"] for r in mine]
        assert numbers == [n for n in range(600) if f"wh-{n % 3}".encode() == key]
