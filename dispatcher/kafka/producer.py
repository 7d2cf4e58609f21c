"""Publishing events to Hooklane's Kafka mirror topics.

Platform services, ``POST /events`` and ``hooklane publish`` use ``Producer``::

    async with Producer(settings) as producer:
        event_id = await producer.publish("REGISTRATIONS.NEW.SUCCEEDED", data, tenant_id=t)

``publish`` builds the event message (``dispatcher.messages.wire.Event``), sends it to
``<prefix><TOPIC>`` keyed by the ordering key (default: the tenant id) and returns once
the broker acknowledged it; it never creates a Kafka topic (``MissingTopicError``: the
catalog's ``hooklane topics add``/``ensure`` do). ``publish_many`` sends a batch
without waiting for each acknowledgement in turn (throughput). ``enqueue`` writes a
delivery task straight to the deliveries topic (test triggers, redeliveries).

Each event carries its W3C trace context in the record's ``traceparent``/``tracestate``
headers: the event's own (``trace=``), else the caller's current OpenTelemetry span when
it has one (an instrumented platform service); with neither, no header, and the router
starts a fresh trace for the event.

The producer is idempotent (``acks="all"``; ``HOOKLANE_KAFKA_IDEMPOTENCE``, on by
default): a batch retried after a lost acknowledgement is written once and in order.
The embedded tansu lacks it, so ``hooklane up`` on tansu turns it off; a retried send
may then duplicate a message, which at-least-once delivery allows (duplicates carry
the same event id).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from dispatcher.kafka.connection import client_options
from dispatcher.kafka.topic_admin import MAX_MESSAGE_BYTES, missing_topics
from dispatcher.messages.trace_context import TraceContext
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import PREFIX, Settings

log = structlog.get_logger(__name__)

# A few milliseconds of linger batch concurrent sends without adding visible latency.
LINGER_MS = 0
# The largest record batch per partition: a router poll's tasks for one partition go
# out as one or a few batches (aiokafka's default, 16 KiB, is ~13 one-KiB tasks), well
# under the broker's default 1 MB message limit.
MAX_BATCH_BYTES = 128 * 1024


# How long a Kafka topic found missing is reported missing without asking the broker.
MISSING_TOPIC_RECHECK_S = 5.0

# Keys whose murmur2 hash is remembered (webhook ids and ordering keys repeat a lot).
MAX_CACHED_KEYS = 100_000


class CachingPartitioner:
    """aiokafka's default (Java-compatible murmur2) partitioner, memoised per key.

    The pure-Python murmur2 is a visible share of the router's cost per delivery, and
    the keys (webhook ids, tenant ids) repeat; the partition chosen is identical.
    """

    def __init__(self, max_keys: int = MAX_CACHED_KEYS) -> None:
        self._max_keys = max_keys
        self._hashes: dict[bytes, int] = {}

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)  # type: ignore[no-any-return]
        return all_partitions[self.hash_of(key) % len(all_partitions)]

    def hash_of(self, key: bytes) -> int:
        """The positive murmur2 hash of ``key`` (the partition is it modulo the count)."""
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed


class ProducerError(RuntimeError):
    """The producer is not usable (not started, or no broker configured)."""


class MissingTopicError(ProducerError):
    """The Kafka topic an event or task would go to does not exist (never created here)."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"Kafka topic {topic} does not exist, and publishing never creates topics:"
            " `hooklane topics ensure` (or `migrate`) creates the internal topics and the"
            " catalog's, `hooklane topics add` a new catalog topic"
        )
        self.topic = topic


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for ``publish_many``."""

    topic: str
    data: dict[str, Any]
    tenant_id: str
    key: str | None = None
    event_id: str | None = None


def build_event(
    topic: str,
    data: dict[str, Any],
    tenant_id: str,
    event_id: str | None = None,
    trace: TraceContext | None = None,
) -> Event:
    """The event message for ``data``: a fresh uuid4 id and the current unix time."""
    return Event(
        id=event_id or str(uuid.uuid4()),
        topic=topic,
        tenant_id=tenant_id,
        triggered_at=int(time.time()),
        data=data,
        trace=trace,
    )


def current_trace() -> TraceContext | None:
    """The caller's current OpenTelemetry span as a W3C context, if it has a valid one."""
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None:  # never imported: the caller is not instrumented
        return None
    found = otel_trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    state = found.trace_state.to_header() if found.trace_state else ""
    return TraceContext(
        f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}", state
    )


def trace_headers(event: Event) -> list[tuple[str, bytes]] | None:
    """The Kafka headers of ``event``'s trace (see the module docstring), or None."""
    trace = event.trace or current_trace()
    return trace.kafka_headers() if trace is not None else None


class Producer:
    """One ``AIOKafkaProducer`` for events and delivery tasks; an async context manager."""

    def __init__(self, settings: Settings, *, linger_ms: int = LINGER_MS) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ProducerError("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS is not set")
        self._settings = settings
        self._linger_ms = linger_ms
        self._kafka: AIOKafkaProducer | None = None
        self._partitioner = CachingPartitioner()
        self._known_topics: set[str] = set()
        self._missing_until: dict[str, float] = {}
        self._topic_lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect to the broker (idempotent where the broker allows it)."""
        if self._kafka is not None:
            return
        idempotent = self._settings.kafka_idempotence
        kafka = self._client(idempotent)
        try:
            await kafka.start()
        except KafkaConnectionError:
            await kafka.stop()
            raise
        except KafkaError as exc:
            await kafka.stop()
            if not idempotent:
                raise
            # A broker without the idempotent producer (tansu answers InitProducerId with
            # an unknown error; older clusters may lack the IdempotentWrite permission).
            log.warning(
                "producer.idempotence_unavailable",
                error=repr(exc),
                hint=f"set {PREFIX}KAFKA_IDEMPOTENCE=false for this broker",
            )
            kafka = self._client(idempotent=False)
            await kafka.start()
        self._kafka = kafka

    async def restart(self) -> None:
        """Replace the client (a new producer id and sequence numbers).

        An idempotent producer whose batch the broker refused for good cannot write to
        that partition again: the next batch's sequence number leaves a gap, which the
        broker answers with OutOfOrderSequenceNumber for ever. Call it with nothing in
        flight.
        """
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await kafka.stop()
        await self.start()

    def _client(self, idempotent: bool) -> AIOKafkaProducer:
        compression = self._settings.kafka_compression
        return AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=idempotent,
            max_request_size=MAX_MESSAGE_BYTES,
            compression_type=None if compression == "none" else compression,
            linger_ms=self._linger_ms,
            request_timeout_ms=30_000,
            max_batch_size=MAX_BATCH_BYTES,
            partitioner=self._partitioner,
        )

    async def stop(self) -> None:
        """Flush pending messages and disconnect."""
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            try:
                await kafka.flush()
            finally:
                await kafka.stop()

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def started(self) -> bool:
        """Whether ``start()`` connected (and ``stop()`` has not been called since)."""
        return self._kafka is not None

    @property
    def kafka(self) -> AIOKafkaProducer:
        """The underlying client (for the router, which produces its own messages)."""
        if self._kafka is None:
            raise ProducerError("the producer is not started")
        return self._kafka

    async def require_topic(self, name: str) -> None:
        """Raise ``MissingTopicError`` unless Kafka topic ``name`` exists (checked once).

        Publishing never creates a topic: a typo would otherwise become a topic the
        router reads for ever. Mirror topics come from the catalog (``hooklane topics
        add``/``ensure``, ``hooklane migrate``, ``hooklane up``).
        """
        if name in self._known_topics:
            return
        async with self._topic_lock:
            if name in self._known_topics:
                return
            # A topic found missing is not asked about again for a while: a caller
            # retrying in a loop must not open an admin connection per message.
            if time.monotonic() < self._missing_until.get(name, 0.0):
                raise MissingTopicError(name)
            if await missing_topics(self._settings, [name]):
                self._missing_until[name] = time.monotonic() + MISSING_TOPIC_RECHECK_S
                raise MissingTopicError(name)
            self._missing_until.pop(name, None)
            self._known_topics.add(name)

    async def publish(
        self,
        topic: str,
        data: dict[str, Any],
        tenant_id: str,
        key: str | None = None,
        event_id: str | None = None,
        trace: TraceContext | None = None,
    ) -> str:
        """Publish one event and wait for the broker's acknowledgement; returns its id."""
        event = build_event(topic, data, tenant_id, event_id, trace)
        await self.publish_event(event, key)
        return event.id

    async def publish_event(self, event: Event, key: str | None = None) -> None:
        """Publish a built event and wait for the broker's acknowledgement."""
        future = await self._send_event(event, key)
        await future

    async def publish_many(self, events: Iterable[Outgoing]) -> list[str]:
        """Publish a batch, waiting for all acknowledgements together; returns the ids.

        Events with the same ordering key keep their relative order.
        """
        futures = []
        ids = []
        for item in events:
            event = build_event(item.topic, item.data, item.tenant_id, item.event_id)
            futures.append(await self._send_event(event, item.key))
            ids.append(event.id)
        if futures:
            await asyncio.gather(*futures)
        return ids

    async def enqueue(self, task: DeliveryTask) -> None:
        """Write a delivery task to the deliveries topic, keyed by webhook id."""
        # The deliveries topic is `hooklane migrate`'s to create (with the operator's
        # replication), never a side effect of a redelivery.
        topic = self._settings.deliveries_topic
        await self.require_topic(topic)
        await self.kafka.send_and_wait(topic, task.to_message(), key=task.webhook_id.encode())

    async def enqueue_many(self, tasks: Iterable[DeliveryTask]) -> int:
        """Write delivery tasks in order, waiting for all acknowledgements together.

        Tasks of one webhook share a partition, so they keep their relative order.
        """
        topic = self._settings.deliveries_topic
        await self.require_topic(topic)
        futures = [
            await self.kafka.send(topic, task.to_message(), key=task.webhook_id.encode())
            for task in tasks
        ]
        if futures:
            await asyncio.gather(*futures)
        return len(futures)

    async def send_keyed(
        self, topic: str, messages: Sequence[tuple[bytes, bytes]]
    ) -> list[asyncio.Future[Any]]:
        """Queue ``(key, value)`` messages for ``topic``; await the futures for the acks."""
        return [future for future, _ in await self.send_tracked(topic, messages)]

    async def send_tracked(
        self, topic: str, messages: Sequence[tuple[bytes, bytes]], *, alone: bool = False
    ) -> list[tuple[asyncio.Future[Any], list[int]]]:
        """Queue ``(key, value)`` messages for ``topic``: per record batch, its future
        and the indexes in ``messages`` it carries (``alone``: one message per batch).

        The partition of each key is the one ``send(key=...)`` picks (murmur2, cached),
        and each partition's messages go out in order as whole record batches: no
        future, size estimate and accumulator lookup per message, no linger.
        """
        if not messages:
            return []
        kafka = self.kafka
        partitions = sorted(await kafka.partitions_for(topic))
        count = len(partitions)
        grouped: dict[int, list[int]] = {}
        for index, (key, _) in enumerate(messages):
            partition = partitions[self._partitioner.hash_of(key) % count]
            grouped.setdefault(partition, []).append(index)
        batches = {
            partition: _batches(kafka, messages, indexes, alone=alone)
            for partition, indexes in grouped.items()
        }
        # Submit round-robin across partitions: aiokafka takes one batch per partition
        # per produce request, so the first request carries a batch of every partition.
        sent: list[tuple[asyncio.Future[Any], list[int]]] = []
        for turn in range(max(len(built) for built in batches.values())):
            for partition, built in batches.items():
                if turn < len(built):
                    batch, carried = built[turn]
                    future = await kafka.send_batch(batch, topic, partition=partition)
                    sent.append((future, carried))
        return sent

    async def _send_event(self, event: Event, key: str | None) -> asyncio.Future[Any]:
        topic = self._settings.mirror_topic(event.topic)
        await self.require_topic(topic)
        ordering_key = (key or event.tenant_id).encode()
        future: asyncio.Future[Any] = await self.kafka.send(
            topic, event.to_message(), key=ordering_key, headers=trace_headers(event)
        )
        return future


def _batches(
    kafka: AIOKafkaProducer,
    messages: Sequence[tuple[bytes, bytes]],
    indexes: Sequence[int],
    *,
    alone: bool = False,
) -> list[tuple[Any, list[int]]]:
    """``messages[indexes]`` in closed record batches of at most ``MAX_BATCH_BYTES`` each
    (``alone``: one message each), in order, with the indexes each batch carries."""
    batches: list[tuple[Any, list[int]]] = [(kafka.create_batch(), [])]
    for index in indexes:
        key, value = messages[index]
        batch, carried = batches[-1]
        if (alone and carried) or batch.append(timestamp=None, key=key, value=value) is None:
            batch, carried = kafka.create_batch(), []  # a fresh batch takes any one message
            batches.append((batch, carried))
            batch.append(timestamp=None, key=key, value=value)
        carried.append(index)
    for batch, _ in batches:
        batch.close()  # else ``send()`` could append to it after submission
    return batches
