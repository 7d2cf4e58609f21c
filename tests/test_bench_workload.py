"""The bench's broker reads (``dispatcher.bench.workload``) on the suite's broker."""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaProducer

from dispatcher.bench.workload import routed_times, topic_partitions, topic_size
from dispatcher.settings import Settings


async def test_topic_size_and_routed_times_find_the_topic(internal_topics: Settings) -> None:
    """A fresh client learns the deliveries topic's partitions from the broker (Apache
    Kafka lists no topic to a client that names none), then counts and reads them."""
    settings = internal_topics
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap is not None
    topic = settings.deliveries_topic
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    sent_at = time.time()
    try:
        for partition in range(2):
            value = orjson.dumps({"sent_at": sent_at, "n": partition})
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()
    partitions = await topic_partitions(settings, topic)
    assert len(partitions) == settings.deliveries_partitions
    assert await topic_size(settings, topic) == 2
    routed = await routed_times(settings, topic, expected=2)
    assert [round(sent, 3) for sent, _ in routed] == [round(sent_at, 3)] * 2
