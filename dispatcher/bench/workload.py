"""What the scenarios send and how they wait: 1 KB events, pre-publishing, paced
publishing, and polling the receiver until every delivery arrived."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from dispatcher.bench.procs import Child
from dispatcher.bench.progress import Progress
from dispatcher.bench.stack import BENCH_TOPIC, Receiver
from dispatcher.kafka.connection import client_options
from dispatcher.messages.wire import Event, delivery_body
from dispatcher.settings import Settings

BODY_BYTES = 1024
PUBLISH_CHUNK = 2000
POLL_S = 0.1


def pad_for(body_bytes: int = BODY_BYTES) -> str:
    """Padding that makes a delivered body about ``body_bytes`` long."""
    sample = Event(
        str(uuid.uuid4()),
        BENCH_TOPIC,
        "ten_bench_00000000_00000",
        int(time.time()),
        event_data(99_999, ""),
    )
    size = len(delivery_body(sample, str(uuid.uuid4()), "v1.0"))
    return "x" * max(0, body_bytes - size)


def event_data(seq: int, pad: str) -> dict[str, Any]:
    """An event's data: the publish time (for latency), its per-webhook sequence, padding.

    ``sent_at`` and ``seq`` come first so the receiver finds them quickly;
    ``registration_id`` satisfies the bench topic's schema (the router validates).
    """
    return {"sent_at": time.time(), "seq": seq, "pad": pad, "registration_id": "reg_bench"}


def assignment(index: int, webhooks: int) -> tuple[int, int]:
    """Event ``index`` goes to webhook ``index % webhooks`` as its ``index // webhooks``-th."""
    return index % webhooks, index // webhooks


async def prepublish(
    settings: Settings,
    tenant_ids: Sequence[str],
    events: int,
    label: str = "publish",
    body_bytes: int = BODY_BYTES,
) -> float:
    """Publish ``events`` events round-robin over the tenants; returns seconds taken."""
    from dispatcher.kafka.producer import Outgoing, Producer

    pad = pad_for(body_bytes)
    progress = Progress(label, events)
    started = time.monotonic()
    async with Producer(settings, linger_ms=20) as producer:
        for first in range(0, events, PUBLISH_CHUNK):
            batch = []
            for index in range(first, min(events, first + PUBLISH_CHUNK)):
                hook, seq = assignment(index, len(tenant_ids))
                batch.append(Outgoing(BENCH_TOPIC, event_data(seq, pad), tenant_ids[hook]))
            await producer.publish_many(batch)
            progress.update(first + len(batch))
    progress.close()
    return time.monotonic() - started


async def paced_publish(
    settings: Settings,
    tenant_ids: Sequence[str],
    rate: float,
    duration: float,
    label: str = "publish",
) -> tuple[int, float]:
    """Publish at ``rate`` events/s for ``duration`` s; returns (events, seconds taken).

    Batches are sent without waiting for the previous acknowledgement so a slow ack
    never lowers the offered rate; each event carries the time it was handed over.
    """
    from dispatcher.kafka.producer import Outgoing, Producer

    pad = pad_for()
    total = int(rate * duration)
    progress = Progress(label, total)
    pending: set[asyncio.Task[list[str]]] = set()
    async with Producer(settings) as producer:
        started = time.monotonic()
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            if due > sent:
                batch = []
                for index in range(sent, due):
                    hook, seq = assignment(index, len(tenant_ids))
                    batch.append(Outgoing(BENCH_TOPIC, event_data(seq, pad), tenant_ids[hook]))
                task = asyncio.create_task(producer.publish_many(batch))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent = due
                progress.update(sent)
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - started
        await asyncio.gather(*pending)
    progress.close()
    return total, elapsed


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, from the broker's metadata.

    Asked by name: a consumer without subscriptions knows the topics only where the
    broker answers a metadata request naming none with all of them (tansu does,
    Apache Kafka answers with none), and ``consumer.topics()`` leaves its cache as it was.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [
        TopicPartition(topic, part["partition"])
        for found in described
        if found["topic"] == topic and not found["error_code"]
        for part in found["partitions"]
    ]


async def topic_size(settings: Settings, topic: str) -> int:
    """How many messages ``topic`` holds (sum of its partitions' end offsets)."""
    partitions = await topic_partitions(settings, topic)
    consumer = AIOKafkaConsumer(**client_options(settings))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()


class DispatcherDied(RuntimeError):
    """A router or deliverer process exited during a scenario."""


@dataclass
class Watch:
    """What ``wait_for_deliveries`` observed."""

    completed: bool
    stats: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


async def wait_for_deliveries(
    receiver: Receiver,
    expected: int,
    within_s: float,
    children: Sequence[Child],
    label: str = "deliver",
    on_tick: Callable[[], Any] | None = None,
) -> Watch:
    """Poll the receiver until ``expected`` unique ok deliveries arrived, or timeout.

    Samples the children's memory on each tick and raises ``DispatcherDied`` if one
    of them exits.
    """
    progress = Progress(label, expected)
    deadline = time.monotonic() + within_s
    stats: dict[str, Any] = {}
    while True:
        stats = await receiver.stats()
        done = int(stats["unique_ok"])
        progress.update(done)
        for child in children:
            if not child.running:
                progress.close("aborted")
                raise DispatcherDied(
                    f"{child.name} exited with code {child.process and child.process.returncode}"
                    f": {child.log_tail(5)}"
                )
            child.sample_memory()
        if on_tick is not None:
            result = on_tick()
            if asyncio.iscoroutine(result):
                await result
        if done >= expected:
            progress.close()
            return Watch(True, stats)
        if time.monotonic() > deadline:
            progress.close(f"timed out after {within_s:.0f}s")
            return Watch(False, stats)
        await asyncio.sleep(POLL_S)


async def routed_times(settings: Settings, topic: str, expected: int) -> list[tuple[float, float]]:
    """``(sent_at, routed_at)`` of every task on the deliveries topic.

    The router's producer stamps each task with its send time (Kafka CreateTime),
    and the task carries the event's ``sent_at``: their difference is the router
    stage of the latency, the rest (deliverer fetch, lane queueing, HTTP) the
    deliverer's. Read after the run, so the hot path pays nothing for it.
    """
    partitions = await topic_partitions(settings, topic)
    consumer = AIOKafkaConsumer(
        **client_options(settings), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    times: list[tuple[float, float]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        idle_polls = 0
        while len(times) < expected and idle_polls < 10:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            idle_polls = 0 if batch else idle_polls + 1
            for records in batch.values():
                for record in records:
                    sent_at = _sent_at(record.value)
                    if sent_at is not None:
                        times.append((sent_at, record.timestamp / 1000))
    finally:
        await consumer.stop()
    return times


def _sent_at(value: bytes | None) -> float | None:
    from dispatcher.bench.receiver import number_after

    return number_after(value, b"sent_at") if value else None
