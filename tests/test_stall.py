"""``consumer.stalled``: a lagging partition whose commit stops moving is logged once."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from dispatcher.kafka.broker import LaunchedBroker
from dispatcher.kafka.topic_admin import ensure_topics
from dispatcher.ops.lag import LagPoller, OffsetReader
from dispatcher.ops.metrics import build_registry
from dispatcher.ops.stall import Stall, StallWatch
from dispatcher.settings import Settings
from tests.test_lag import commit, produce

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Each step: (seconds later, committed, lags, newly stalled, resumed).
Step = tuple[
    float, dict[TopicPartition, int], dict[TopicPartition, int], list[Stall], list[TopicPartition]
]
CASES: dict[str, list[Step]] = {
    "moving commit never stalls": [
        (0, {A: 1}, {A: 5}, [], []),
        (100, {A: 2}, {A: 5}, [], []),
        (100, {A: 3}, {A: 5}, [], []),
    ],
    "a commit still while records wait stalls once": [
        (0, {A: 1}, {A: 5}, [], []),
        (60, {A: 1}, {A: 6}, [], []),
        (60, {A: 1}, {A: 7}, [Stall(A, 7, 120.0)], []),
        (60, {A: 1}, {A: 8}, [], []),
    ],
    "then resumes when the commit moves": [
        (0, {A: 1}, {A: 5}, [], []),
        (120, {A: 1}, {A: 5}, [Stall(A, 5, 120.0)], []),
        (5, {A: 4}, {A: 2}, [], [A]),
        (5, {A: 4}, {A: 2}, [], []),
    ],
    "an idle partition (no lag) is not stalled": [
        (0, {A: 9}, {A: 0}, [], []),
        (500, {A: 9}, {A: 0}, [], []),
    ],
    "lag drained to zero resumes it": [
        (0, {A: 1}, {A: 3}, [], []),
        (130, {A: 1}, {A: 3}, [Stall(A, 3, 130.0)], []),
        (1, {A: 1}, {A: 0}, [], [A]),
    ],
    "never committed counts as a still commit": [
        (0, {}, {A: 4}, [], []),
        (120, {}, {A: 4}, [Stall(A, 4, 120.0)], []),
    ],
    "partitions are judged one by one": [
        (0, {A: 1, B: 1}, {A: 5, B: 5}, [], []),
        (120, {A: 1, B: 3}, {A: 5, B: 3}, [Stall(A, 5, 120.0)], []),
    ],
    "a partition no longer reported is forgotten": [
        (0, {A: 1}, {A: 5}, [], []),
        (120, {A: 1}, {A: 5}, [Stall(A, 5, 120.0)], []),
        (1, {}, {}, [], []),
        (1, {A: 1}, {A: 5}, [], []),
        (119, {A: 1}, {A: 5}, [], []),
        (1, {A: 1}, {A: 5}, [Stall(A, 5, 120.0)], []),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_stall_watch(steps: list[Step]) -> None:
    clock = Clock()
    watch = StallWatch(after_s=120, clock=clock)
    for later, committed, lags, stalled, resumed in steps:
        clock.now += later
        assert watch.observe(committed, lags) == (stalled, resumed)


async def test_the_poller_logs_a_stalled_group_on_the_real_broker(
    broker: LaunchedBroker, settings: Settings
) -> None:
    """A group that committed behind the end and never moves is reported once, with
    its lag; when it commits again it is reported as resumed."""
    topic = settings.mirror_topic("STALL.TEST")
    bootstrap = broker.bootstrap_servers
    await ensure_topics(settings, {topic: 1})
    await produce(bootstrap, topic, {0: 4})
    group = f"stall-{settings.topic_prefix}"
    tp = TopicPartition(topic, 0)
    await commit(bootstrap, group, {tp: 1})
    reader = OffsetReader(settings)
    await reader.start()
    clock = Clock()

    async def owned() -> set[TopicPartition]:
        return {tp}

    poller = LagPoller(
        reader,
        build_registry(("router",)).gauge("consumer_lag"),
        group,
        owned,
        watch=StallWatch(after_s=60, clock=clock),
    )
    try:
        with capture_logs() as logs:
            await poller.refresh()
            clock.now += 61
            await poller.refresh()
            clock.now += 61
            await poller.refresh()
            await commit(bootstrap, group, {tp: 4})
            await poller.refresh()
    finally:
        await reader.close()
    events = [entry for entry in logs if entry["event"].startswith("consumer.")]
    assert [entry["event"] for entry in events] == ["consumer.stalled", "consumer.resumed"]
    assert events[0]["lag"] == 3
    assert events[0]["group"] == group
    assert events[0]["partition"] == 0
    assert "HOOKLANE_FETCH_MAX_WAIT_MS" in events[0]["hint"]
