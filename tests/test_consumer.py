"""The shared consumer loop against the real broker: commits, re-reads, release and leave."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer, TopicPartition
from structlog.testing import capture_logs

from dispatcher.kafka.group_consumer import Batch, GroupConsumer
from dispatcher.kafka.topic_admin import ensure_topics
from dispatcher.settings import Settings
from tests.support.pipeline import wait_until


@dataclass
class RecordingHandler:
    """A handler that records what it takes; ``finished_below`` is its commit position."""

    refuse_first: int = 0  # batches to refuse before taking any
    taken: list[int] = field(default_factory=list)  # values, in order of taking
    released: list[set[int]] = field(default_factory=list)
    finished_below: dict[TopicPartition, int] = field(default_factory=dict)
    outstanding: int = 0

    async def take(self, batch: Batch) -> bool:
        if self.refuse_first > 0:
            self.refuse_first -= 1
            return False
        for records in batch.values():
            self.taken.extend(int(record.value) for record in records)
        return True

    def committable(self) -> dict[TopicPartition, int]:
        return dict(self.finished_below)

    async def before_commit(self) -> bool:
        return True

    async def release(self, partitions: set[TopicPartition]) -> None:
        self.released.append({tp.partition for tp in partitions})

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.finished_below.pop(tp, None)


async def _topic_with(settings: Settings, count: int) -> str:
    assert settings.kafka_bootstrap_servers
    topic = f"{settings.topic_prefix}loop-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings, {topic: 1})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, str(n).encode(), partition=0)
    finally:
        await producer.stop()
    return topic


def _member(settings: Settings, handler: RecordingHandler, topic: str, group: str) -> GroupConsumer:
    return GroupConsumer(
        handler,
        name="test",
        settings=settings,
        group_id=group,
        topics=[topic],
    )


async def _run_until(
    member: GroupConsumer, handler: RecordingHandler, taken: int, finished_below: int | None
) -> None:
    """Run ``member`` until ``taken`` values arrived, mark work finished, leave gracefully."""
    stopping = asyncio.Event()
    await member.start()
    running = asyncio.create_task(member.run(stopping))
    try:
        await wait_until(lambda: len(handler.taken) >= taken, message=f"{taken} records")
        if finished_below is not None:
            handler.finished_below[TopicPartition(next(iter(member.assignment)).topic, 0)] = (
                finished_below
            )
    finally:
        stopping.set()
        await running
        await member.leave()


async def test_only_finished_work_is_committed_and_the_next_member_resumes_there(
    settings: Settings,
) -> None:
    """The commit is the handler's position: the next member re-reads everything after it."""
    topic = await _topic_with(settings, 10)
    group = f"loop-{uuid.uuid4().hex[:8]}"
    first = RecordingHandler()
    with capture_logs() as logs:
        await _run_until(_member(settings, first, topic, group), first, 10, finished_below=4)
    second = RecordingHandler()
    await _run_until(_member(settings, second, topic, group), second, 6, finished_below=None)
    assert first.taken == list(range(10))
    assert second.taken == list(range(4, 10))
    assert first.released == [{0}]  # the graceful leave released the partition
    events = [entry["event"] for entry in logs]
    assert "test.partitions_assigned" in events
    assert events.index("test.partitions_released") > events.index("test.partitions_assigned")


async def test_a_batch_the_handler_could_not_take_is_read_again(settings: Settings) -> None:
    """A refused batch (say, the router could not produce) comes again from the commit."""
    topic = await _topic_with(settings, 5)
    handler = RecordingHandler(refuse_first=1)
    member = _member(settings, handler, topic, f"loop-{uuid.uuid4().hex[:8]}")
    await _run_until(member, handler, 5, finished_below=None)
    assert handler.taken == list(range(5))


async def test_a_member_whose_group_coordination_died_joins_again(settings: Settings) -> None:
    """aiokafka's coordination task ending with an error (seen after the active KRaft
    controller was killed) leaves its consumer polling errors for ever: the member drops
    it, releases its partitions and reads on from the last commit with a new one."""
    topic = await _topic_with(settings, 5)
    handler = RecordingHandler()
    member = _member(settings, handler, topic, f"loop-{uuid.uuid4().hex[:8]}")
    stopping = asyncio.Event()
    await member.start()
    running = asyncio.create_task(member.run(stopping))
    try:
        await wait_until(lambda: len(handler.taken) >= 5, message="5 records")
        handler.finished_below[TopicPartition(topic, 0)] = 3
        await member.commit()
        broken = member._consumer
        assert broken is not None

        def need_rejoin(subscription: object) -> bool:
            raise AssertionError  # as aiokafka's own assertion in that routine

        coordinator = broken._coordinator
        coordinator.need_rejoin = need_rejoin
        coordinator.request_rejoin()  # wakes the routine, which dies
        with capture_logs() as logs:
            await wait_until(lambda: len(handler.taken) >= 7, message="records read again")
        assert member._consumer is not broken
        assert "test.consumer_replaced" in [entry["event"] for entry in logs]
    finally:
        stopping.set()
        await running
        await member.leave()
    assert handler.taken[:7] == [0, 1, 2, 3, 4, 3, 4]  # again from the commit, in order
    assert {0} in handler.released
