"""The router: mirror topics in, one delivery task per subscribed webhook out.

Consumer group ``hooklane-router`` subscribes to every mirror topic with a pattern
(new topics are picked up at the next metadata refresh). For each event it looks up
the tenant's ENABLED webhooks subscribed to the topic in the in-memory
``SubscriptionIndex`` and writes one ``DeliveryTask`` per webhook to
``<prefix>deliveries``, keyed by webhook id. A message that is not a valid event goes
to ``<prefix>dead-letter``: the original value, with the reason and its origin in
headers; so does a valid event whose topic is not in the topic catalog or whose data
fails the topic's JSON Schema. An event already routed within the dedup window is
dropped (``dispatcher.ingest``: one Postgres round trip per poll). The router never
crashes on input.

At-least-once: all tasks and dead letters of a fetched batch are sent, every broker
acknowledgement is awaited, and only then are the batch's offsets committed. If a send
fails, the partitions are rewound to their committed offsets and the batch is
routed again (duplicates are possible and carry the same event id).

Run with ``hooklane router`` or ``python -m dispatcher.router``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from dispatcher.broker import require_topics
from dispatcher.dead_letter import send_dead_letter
from dispatcher.events import DeliveryTask, Event
from dispatcher.ingest import Ingest, Rejected, Verdict
from dispatcher.operational import recipients
from dispatcher.producer import Producer
from dispatcher.service import run_until_signalled
from dispatcher.settings import Settings
from dispatcher.subscriptions import SubscriptionIndex

log = structlog.get_logger(__name__)

GROUP_ID = "hooklane-router"
INTERNAL_TOPICS = ("deliveries", "dead-letter")
MAX_BATCH = 1000
POLL_TIMEOUT_MS = 200
# How soon a newly created mirror topic is noticed by the pattern subscription.
METADATA_MAX_AGE_MS = 5000
RETRY_DELAY_S = 0.5


def mirror_pattern(prefix: str) -> str:
    """The regex of every mirror topic under ``prefix`` (internal topics excluded)."""
    internal = "|".join(re.escape(name) + "$" for name in INTERNAL_TOPICS)
    return re.escape(prefix) + f"(?!{internal}).+"


class _BatchGuard(ConsumerRebalanceListener):  # type: ignore[misc]
    """On revocation, waits until the batch being routed is acknowledged and committed."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self._lock:
            log.info("router.partitions_revoked", partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("router.partitions_assigned", partitions=len(assigned))


class Router:
    """One router process's worth of work: ``start()``, ``run()``, ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        index: SubscriptionIndex | None = None,
        group_id: str = GROUP_ID,
    ) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS is not set")
        self.settings = settings
        self.index = index or SubscriptionIndex(settings.database_url)
        self._bootstrap = settings.kafka_bootstrap_servers
        self._group_id = group_id
        self._producer = Producer(settings)
        self._ingest = Ingest(settings, self.index.topic_known)
        self._consumer: AIOKafkaConsumer | None = None
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.routed = 0  # events routed (for tests and logs)
        self.dead_lettered = 0

    async def start(self) -> None:
        """Check the internal topics, load subscriptions and join the group."""
        settings = self.settings
        await require_topics(settings)
        await self.index.start()
        await self._ingest.start()
        await self._producer.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            max_poll_records=MAX_BATCH,
        )
        consumer.subscribe(
            pattern=mirror_pattern(settings.topic_prefix), listener=_BatchGuard(self._batch_lock)
        )
        await consumer.start()
        self._consumer = consumer
        log.info("router.started", prefix=settings.topic_prefix)

    async def run(self) -> None:
        """Route until ``stop()``; then commit, leave the group and close everything."""
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        try:
            while not self._stopping.is_set():
                try:
                    batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                except KafkaError as exc:
                    # The client reconnects by itself; log and keep polling.
                    log.warning("router.fetch_failed", error=str(exc))
                    await asyncio.sleep(RETRY_DELAY_S)
                    continue
                if batch:
                    async with self._batch_lock:
                        await self._route_batch(batch)
        finally:
            await self._close()

    def stop(self) -> None:
        """Ask ``run()`` to finish after the current batch."""
        self._stopping.set()

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()  # leaves the group; offsets were committed per batch
        await self._producer.stop()
        await self._ingest.stop()
        await self.index.stop()
        log.info("router.stopped")

    async def _route_batch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self._consumer is not None
        futures: list[asyncio.Future[Any]] = []
        try:
            records = [record for part in batch.values() for record in part]
            verdicts = await self._ingest.admit(records)  # one Postgres round trip
            for record, verdict in zip(records, verdicts, strict=True):
                futures.extend(await self._route(record, verdict))
            await asyncio.gather(*futures)
        except KafkaError as exc:
            # Nothing of this batch is committed: read it again from the committed offsets.
            log.warning("router.produce_failed", error=str(exc))
            for future in futures:
                future.cancel()
            await asyncio.sleep(RETRY_DELAY_S)
            with contextlib.suppress(KafkaError):
                await self._consumer.seek_to_committed(*batch)
            return
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in batch.items()
        }
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance took the partitions: their next owner re-routes (duplicates only).
            log.warning("router.commit_failed", error=str(exc))

    async def _route(self, record: ConsumerRecord, verdict: Verdict) -> list[asyncio.Future[Any]]:
        if isinstance(verdict, Rejected):
            return [await self._dead_letter(record, verdict.reason)]
        if not isinstance(verdict, Event):
            return []  # a duplicate: routed already within the dedup window
        event = verdict
        try:
            # recipients(): an operational event never goes to the webhook it is about.
            tasks = [
                (webhook_id, DeliveryTask(webhook_id, event).to_message())
                for webhook_id in recipients(event, self.index.matching(event))
            ]
        except Exception as exc:  # never crash on input: whatever this message does
            log.exception("router.unroutable", topic=record.topic, offset=record.offset)
            return [await self._dead_letter(record, f"cannot route: {type(exc).__name__}: {exc}")]
        self.routed += 1
        kafka = self._producer.kafka
        return [
            await kafka.send(self.settings.deliveries_topic, message, key=webhook_id.encode())
            for webhook_id, message in tasks
        ]

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> asyncio.Future[Any]:
        self.dead_lettered += 1
        return await send_dead_letter(
            self._producer.kafka, self.settings.dead_letter_topic, record, reason
        )


async def run_router(settings: Settings) -> None:
    """Run a router until SIGINT or SIGTERM (``hooklane router``)."""
    await run_until_signalled(Router(settings))


if __name__ == "__main__":
    from dispatcher.cli import main

    raise SystemExit(main(["router"]))
