"""Consumer lag: the pure computation, and the broker reads on the embedded tansu."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from dispatcher.kafka.broker import LaunchedBroker
from dispatcher.kafka.topic_admin import ensure_topics
from dispatcher.ops.lag import LagPoller, LagSummary, OffsetReader, compute_lag, summarize
from dispatcher.ops.metrics import build_registry
from dispatcher.settings import Settings

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


@pytest.mark.parametrize(
    ("committed", "beginning", "end", "expected"),
    [
        ({A0: 3}, {A0: 0}, {A0: 10}, {A0: 7}),
        ({A0: 10}, {A0: 0}, {A0: 10}, {A0: 0}),
        ({}, {A0: 0}, {A0: 4}, {A0: 4}),  # never committed: lags from the start
        ({A0: -1}, {A0: 2}, {A0: 4}, {A0: 2}),  # -1 = no commit; retention trimmed 2
        ({A0: 12}, {A0: 0}, {A0: 10}, {A0: 0}),  # end read stale: never negative
        ({A0: 1, B0: 5}, {}, {A0: 1}, {A0: 0}),  # only partitions with an end count
        ({}, {}, {}, {}),
    ],
)
def test_compute_lag(
    committed: dict[TopicPartition, int],
    beginning: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
    expected: dict[TopicPartition, int],
) -> None:
    """Lag is the high-water mark minus the committed (or first retained) offset."""
    assert compute_lag(committed, beginning, end) == expected


@pytest.mark.parametrize(
    ("lags", "expected"),
    [
        ({}, LagSummary(0, None, 0)),
        ({A0: 2, A1: 5, B0: 1}, LagSummary(8, A1, 5)),
        ({A1: 3, A0: 3}, LagSummary(6, A0, 3)),  # ties: the first partition
    ],
)
def test_summarize(lags: dict[TopicPartition, int], expected: LagSummary) -> None:
    """The summary has the total and the partition lagging most."""
    assert summarize(lags) == expected


async def produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in counts.items():
            for _ in range(count):
                await producer.send_and_wait(topic, b"x", partition=partition)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` as a real group member that read them."""
    consumer = AIOKafkaConsumer(
        *{tp.topic for tp in offsets},
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def test_offset_reader_and_poller_on_the_real_broker(
    broker: LaunchedBroker, settings: Settings
) -> None:
    """A group committed behind the high-water mark shows that lag, per partition."""
    topic = settings.mirror_topic("LAG.TEST")
    bootstrap = broker.bootstrap_servers
    await ensure_topics(settings, {topic: 2})
    await produce(bootstrap, topic, {0: 5, 1: 3})
    group = f"lag-{settings.topic_prefix}"
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await commit(bootstrap, group, {p0: 2})
    reader = OffsetReader(settings)
    await reader.start()
    try:
        partitions = await reader.partitions(lambda name: name == topic)
        assert partitions == {p0, p1}
        assert await reader.lag(group, partitions) == {p0: 3, p1: 3}

        families = build_registry(("router",))
        owned = {p0}

        async def reported() -> set[TopicPartition]:
            return set(owned)

        poller = LagPoller(reader, families.gauge("consumer_lag"), group, reported)
        await poller.refresh()
        get = families.registry.get_sample_value
        labels = {"group": group, "topic": topic}
        assert get("hooklane_consumer_lag", {**labels, "partition": "0"}) == 3.0
        assert get("hooklane_consumer_lag", {**labels, "partition": "1"}) is None

        await commit(bootstrap, group, {p0: 5, p1: 3})
        owned.clear()
        owned.add(p1)  # a rebalance moved the partitions: p0's series goes away
        await poller.refresh()
        assert get("hooklane_consumer_lag", {**labels, "partition": "0"}) is None
        assert get("hooklane_consumer_lag", {**labels, "partition": "1"}) == 0.0
    finally:
        await reader.close()
