"""The router: mirror topics in, one delivery task per subscribed webhook out.

Consumer group ``hooklane-router`` subscribes to every mirror topic with a pattern
(new topics are picked up at the next metadata refresh). For each event it looks up
the tenant's ENABLED webhooks subscribed to the topic in the in-memory
``SubscriptionIndex`` and writes one ``DeliveryTask`` per webhook to
``<prefix>deliveries``, keyed by webhook id. A message that is not a valid event goes
to ``<prefix>dead-letter``: the original value, with the reason and its origin in
headers; so does a valid event whose topic is not in the topic catalog or whose data
fails the topic's JSON Schema. An event already routed within the dedup window is
dropped (``dispatcher.router.ingest``: one Postgres round trip per poll). The router never
crashes on input.

At-least-once: all tasks and dead letters of a fetched batch are sent, every broker
acknowledgement is awaited, and only then are the batch's offsets committable (the
shared ``GroupConsumer`` loop commits them, and makes a revocation wait for the batch
being routed). If a send fails, the batch is read again from the committed offsets and
routed again (duplicates are possible and carry the same event id).

Run with ``hooklane router`` or ``python -m dispatcher.router``.
"""

from __future__ import annotations

import asyncio
import re

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from dispatcher.kafka.broker import require_codecs
from dispatcher.kafka.group_consumer import Batch, GroupConsumer, membership
from dispatcher.kafka.producer import Producer
from dispatcher.kafka.reliable_send import Stopped, send_all, send_dead_letters
from dispatcher.kafka.topic_admin import require_topics
from dispatcher.messages.operational import recipients
from dispatcher.messages.wire import MAX_TASK_BYTES, Event, task_messages
from dispatcher.ops.metrics import RouterMetrics
from dispatcher.router.ingest import Ingest, Rejected, Verdict
from dispatcher.router.subscription_index import SubscriptionIndex
from dispatcher.settings import Settings

log = structlog.get_logger(__name__)

GROUP_ID = "hooklane-router"
INTERNAL_TOPICS = ("deliveries", "dead-letter")
MAX_BATCH = 1000
POLL_TIMEOUT_MS = 200
# How soon a newly created mirror topic is noticed by the pattern subscription.
METADATA_MAX_AGE_MS = 5000


def mirror_pattern(prefix: str) -> str:
    """The regex of every mirror topic under ``prefix`` (internal topics excluded)."""
    internal = "|".join(re.escape(name) + "$" for name in INTERNAL_TOPICS)
    return re.escape(prefix) + f"(?!{internal}).+"


class Router:
    """One router process's worth of work: ``start()``, ``run()``, ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        index: SubscriptionIndex | None = None,
        group_id: str = GROUP_ID,
        metrics: RouterMetrics | None = None,
    ) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS is not set")
        self.settings = settings
        self.index = index or SubscriptionIndex(settings.database_url)
        self._group_id = group_id
        self._metrics = metrics  # None: not counted (tests, benchmarks)
        self._producer = Producer(settings)
        self._ingest = Ingest(settings, self.index.topic_known, group_id)
        # Recipients per event (by id()) of the batch being routed, while exporting spans.
        self._recipients: dict[int, int] = {}
        self._group: GroupConsumer | None = None
        self._stopping = asyncio.Event()
        # Per partition, the offset after the last batch routed and acknowledged.
        self._positions: dict[TopicPartition, int] = {}

    @property
    def assignment(self) -> set[TopicPartition]:
        """The mirror-topic partitions this router owns now."""
        return self._group.assignment if self._group is not None else set()

    async def start(self) -> None:
        """Check the codecs and internal topics, load subscriptions and join the group."""
        settings = self.settings
        require_codecs()
        await require_topics(settings)
        await self.index.start()
        await self._ingest.start()
        await self._producer.start()
        self._group = GroupConsumer(
            self,
            name="router",
            settings=settings,
            group_id=self._group_id,
            pattern=mirror_pattern(settings.topic_prefix),
            poll_timeout_ms=POLL_TIMEOUT_MS,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            max_poll_records=MAX_BATCH,
            # A publisher's aborted transaction is not an event (nor are the records of
            # one still open: they wait until it commits, as Kafka's read_committed does).
            isolation_level="read_committed",
            commit_duration=self._metrics.commit_duration if self._metrics else None,
            **membership(settings),
        )
        await self._group.start()
        log.info("router.started", prefix=settings.topic_prefix)

    async def run(self) -> None:
        """Route until ``stop()``; then commit, leave the group and close everything.

        Cancelling it is an abrupt stop: nothing more is committed.
        """
        if self._group is None:
            await self.start()
        assert self._group is not None
        graceful = True
        try:
            await self._group.run(self._stopping)
        except asyncio.CancelledError:
            graceful = False
            raise
        finally:
            try:
                if graceful:
                    await self._group.leave()
            finally:
                await self._close()

    def stop(self) -> None:
        """Ask ``run()`` to finish after the current batch."""
        self._stopping.set()

    async def _close(self) -> None:
        if self._group is not None:
            await self._group.close()
        await self._producer.stop()
        await self._ingest.stop()
        await self.index.stop()
        log.info("router.stopped")

    # -- the consumer loop's handler (dispatcher.kafka.group_consumer.Handler) --------------------

    @property
    def outstanding(self) -> int:
        """Always 0: a batch is finished (acknowledged) before the next poll."""
        return 0

    async def take(self, batch: Batch) -> bool:
        """Route every record of ``batch`` and wait for every acknowledgement."""
        filtered_before = self.index.subscriptions.filtered
        records = [record for part in batch.values() for record in part]
        verdicts = await self._admit(records)  # one Postgres round trip
        tasks: list[tuple[bytes, bytes]] = []
        owners: list[int] = []  # the index in ``records`` of each task's record
        applied = [
            self._route(index, record, verdict, tasks, owners)
            for index, (record, verdict) in enumerate(zip(records, verdicts, strict=True))
        ]
        try:
            # Tasks keep record order per webhook: one partition per key, batches in order.
            refused = await send_all(
                self._producer, self.settings.deliveries_topic, tasks, owners, self._stopping
            )
            for index, reason in refused.items():
                applied[index] = Rejected(reason, "produce_refused")
            letters = [
                (records[index], verdict.reason)
                for index, verdict in enumerate(applied)
                if isinstance(verdict, Rejected)
            ]
            await send_dead_letters(
                self._producer.kafka, self.settings.dead_letter_topic, letters, self._stopping
            )
        except (KafkaError, Stopped) as exc:
            # Nothing of this batch is committed: it is read again from the commit.
            log.warning("router.produce_failed", error=repr(exc))
            if self._ingest.spans:
                self._end_spans(f"produce failed: {exc!r}")
            return False
        if self._ingest.spans:
            self._end_spans(None)
        for tp, part in batch.items():
            self._positions[tp] = part[-1].offset + 1
        if self._metrics is not None:
            self._count(applied, self.index.subscriptions.filtered - filtered_before)
        return True

    async def _admit(self, records: list[ConsumerRecord]) -> list[Verdict]:
        """``Ingest.admit``, with no record able to stop the partition.

        An unexpected exception (a bug, or input no check foresaw) is pinned on its
        record by admitting the batch's records one at a time; the one that still fails
        is dead-lettered as ``internal`` (traceback in the log), the others go on.
        """
        try:
            return await self._ingest.admit(records)
        except Exception as exc:
            if len(records) > 1:
                log.warning("router.admit_failed", error=f"{type(exc).__name__}: {exc}")
                return [verdict for record in records for verdict in await self._admit([record])]
            log.exception(
                "router.internal_error",
                topic=records[0].topic,
                partition=records[0].partition,
                offset=records[0].offset,
            )
            return [Rejected(f"internal error: {type(exc).__name__}: {exc}", "internal")]

    def _end_spans(self, failed: str | None) -> None:
        recipients, self._recipients = self._recipients, {}
        self._ingest.end_spans(recipients, failed)

    def _count(self, applied: list[Verdict], filtered: int) -> None:
        # Once the batch is acknowledged, so a batch read again is not counted twice.
        assert self._metrics is not None
        metrics = self._metrics
        for verdict in applied:
            if isinstance(verdict, Event):
                metrics.routed(verdict.topic).inc()
            elif isinstance(verdict, Rejected):
                metrics.dead_lettered(verdict.category).inc()
        if filtered:
            metrics.filtered.inc(filtered)

    def committable(self) -> dict[TopicPartition, int]:
        """The position after the last routed batch of every partition."""
        return dict(self._positions)

    async def before_commit(self) -> bool:
        """Nothing to write first: the acknowledgements were awaited in ``take``."""
        return True

    async def release(self, partitions: set[TopicPartition]) -> None:
        """Nothing in flight: the batch being routed finished before a revocation."""

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the positions of partitions no longer owned."""
        for tp in partitions:
            self._positions.pop(tp, None)

    def _route(
        self,
        index: int,
        record: ConsumerRecord,
        verdict: Verdict,
        tasks: list[tuple[bytes, bytes]],
        owners: list[int],
    ) -> Verdict:
        """Append ``(key, task)`` per recipient of record ``index`` to ``tasks`` (and
        ``index`` to ``owners``); returns what is done with the record."""
        if not isinstance(verdict, Event):
            return verdict  # Rejected (dead-lettered), or a duplicate routed already
        event = verdict
        try:
            # recipients(): an operational event never goes to the webhook it is about.
            webhook_ids = recipients(event, self.index.matching(event))
            # The event is encoded once for all its recipients.
            messages = task_messages(event, webhook_ids)
        except Exception as exc:  # never crash on input: whatever this message does
            log.exception("router.internal_error", topic=record.topic, offset=record.offset)
            return Rejected(f"internal error: {type(exc).__name__}: {exc}", "internal")
        if messages and len(messages[0]) > MAX_TASK_BYTES:
            return Rejected(
                f"the delivery task would be {len(messages[0])} bytes,"
                f" more than the {MAX_TASK_BYTES} the deliveries topic carries",
                "too_large",
            )
        tasks.extend(zip([w.encode() for w in webhook_ids], messages, strict=True))
        owners.extend([index] * len(messages))
        if self._ingest.spans:
            self._recipients[id(event)] = len(webhook_ids)
        return event
