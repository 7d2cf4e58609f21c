"""The deliverer: deliveries topic in, signed HTTP requests out, offsets committed.

Consumer group ``hooklane-deliverer`` reads ``<prefix>deliveries`` (keyed by webhook
id, so each webhook belongs to one deliverer at a time) and hands every task to the
``Worker`` (lanes, caps, retries). Offsets are committed every ``COMMIT_INTERVAL_S``
up to what each partition's ``OffsetTracker`` allows: the highest offset below which
every delivery finished. Too many unfinished deliveries pause the partitions until the
backlog drains below half (backpressure). Lanes failing beyond the in-memory window
are parked in Postgres; the ``BacklogScheduler`` running alongside retries and drains
them, and every attempt goes to the ``AttemptLog``. On revocation and on ``stop()`` the
deliverer stops taking work from those partitions, lets in-flight requests finish
within the delivery timeout, commits, and (on stop) leaves the group.

Run with ``hooklane deliverer`` or ``python -m dispatcher.deliverer``; tests run
``Deliverer(settings).run()`` as a task (see ``tests/pipeline_helpers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from dispatcher import db
from dispatcher.attempt_log import AttemptLog
from dispatcher.broker import ensure_topics
from dispatcher.dead_letter import send_dead_letter
from dispatcher.deliverer.store import PostgresStore
from dispatcher.deliverer.targets import TargetCache
from dispatcher.deliverer.worker import Worker
from dispatcher.events import DeliveryTask, InvalidMessage
from dispatcher.scheduler import BacklogScheduler
from dispatcher.secrets import SecretBox
from dispatcher.sender import AiohttpSender, Sender
from dispatcher.service import run_until_signalled
from dispatcher.settings import Settings
from dispatcher.subscriptions import WebhookChanges

__all__ = ["GROUP_ID", "Deliverer", "run_deliverer"]

log = structlog.get_logger(__name__)

GROUP_ID = "hooklane-deliverer"
POLL_TIMEOUT_MS = 100
MAX_POLL_RECORDS = 500
COMMIT_INTERVAL_S = 0.1
FETCH_RETRY_DELAY_S = 0.5
# Unfinished deliveries above which fetching pauses; it resumes below half of it.
MAX_BUFFERED = 5000


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._deliverer._release(set(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info(
            "deliverer.partitions_assigned", partitions=sorted(tp.partition for tp in assigned)
        )


class Deliverer:
    """One deliverer process's worth of work: ``start()``, ``run()``, ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        sender: Sender | None = None,
        group_id: str = GROUP_ID,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS is not set")
        self.settings = settings
        self._bootstrap = settings.kafka_bootstrap_servers
        self._group_id = group_id
        self._given_sender = sender
        self._max_buffered = max_buffered
        self._stopping = asyncio.Event()
        self._aborted = False
        self._crashed: BaseException | None = None
        self._commit_lock = asyncio.Lock()
        self._committed: dict[TopicPartition, int] = {}
        self._paused = False
        self._pool: asyncpg.Pool | None = None
        self._sender: Sender | None = None
        self._changes: WebhookChanges | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._dead_letters: AIOKafkaProducer | None = None
        self._attempt_log: AttemptLog | None = None
        self._scheduler: BacklogScheduler | None = None
        self.worker: Worker | None = None

    @property
    def assignment(self) -> set[TopicPartition]:
        """The deliveries partitions this deliverer owns now."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    async def start(self) -> None:
        """Create the topics, connect to Postgres and join the consumer group."""
        settings = self.settings
        await ensure_topics(
            self._bootstrap,
            {
                settings.deliveries_topic: settings.deliveries_partitions,
                settings.dead_letter_topic: 1,
            },
        )
        self._pool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
        targets = TargetCache.from_store(self._pool, SecretBox.from_setting(settings.secret_key))
        self._sender = self._given_sender or AiohttpSender(settings)
        self._attempt_log = AttemptLog(self._pool)
        self._attempt_log.start()
        worker = self.worker = Worker(
            settings,
            self._sender,
            targets,
            PostgresStore(self._pool),
            on_attempt=self._attempt_log.record,
            # A failing lane may hold at most 5% of the buffer before it parks.
            park_early_above=max(1, self._max_buffered // 20),
        )
        self._scheduler = BacklogScheduler(
            settings, self._pool, self._sender, targets.get, self._attempt_log
        )

        async def changed(webhook_id: str) -> None:
            targets.invalidate(webhook_id)
            worker.webhook_changed(webhook_id)

        async def resync() -> None:
            targets.clear()
            for webhook_id in list(worker.lanes):
                worker.webhook_changed(webhook_id)

        self._changes = WebhookChanges(settings.database_url, changed, resync)
        await self._changes.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_poll_records=MAX_POLL_RECORDS,
            # A revocation waits for in-flight requests (up to the delivery timeout).
            rebalance_timeout_ms=int((settings.delivery_timeout_s + 10) * 1000),
        )
        self._dead_letters = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await self._dead_letters.start()
        consumer.subscribe([settings.deliveries_topic], listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer
        log.info("deliverer.started", topic=settings.deliveries_topic)

    def stop(self) -> None:
        """Ask ``run()`` to stop taking work, finish in-flight, commit and leave."""
        self._stopping.set()

    def abort(self) -> None:
        """Make the next exit of ``run()`` skip finishing in-flight work and committing.

        Cancel the ``run()`` task afterwards: together they simulate a crash in-process.
        """
        self._aborted = True

    async def run(self) -> None:
        """Deliver until ``stop()``."""
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None and self.worker is not None
        assert self._scheduler is not None
        background = [
            asyncio.create_task(self.worker.run(), name="deliverer-dispatch"),
            asyncio.create_task(self._commit_periodically(), name="deliverer-commit"),
        ]
        scheduler = asyncio.create_task(self._scheduler.run(), name="deliverer-backlog")
        for task in [*background, scheduler]:
            task.add_done_callback(self._background_ended)
        try:
            while not self._stopping.is_set():
                try:
                    batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                except KafkaError as exc:
                    # The client reconnects by itself; log and keep polling.
                    log.warning("deliverer.fetch_failed", error=str(exc))
                    await asyncio.sleep(FETCH_RETRY_DELAY_S)
                    continue
                await self._accept(batch)
                self._apply_backpressure()
        finally:
            self._scheduler.stop()
            await self._shutdown(background, scheduler)
        if self._crashed is not None:
            raise RuntimeError("a deliverer task failed") from self._crashed

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        # These tasks run until shutdown; one ending early is a bug: stop (committing
        # what is finished) and exit with an error so the supervisor restarts us.
        if task.cancelled() or self._stopping.is_set():
            return
        error = task.exception()
        log.error("deliverer.task_failed", task=task.get_name(), error=repr(error))
        self._crashed = error or RuntimeError(f"{task.get_name()} ended")
        self._stopping.set()

    # -- intake and backpressure ------------------------------------------------------

    async def _accept(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.worker is not None
        owned = self.assignment
        for tp, records in batch.items():
            if tp not in owned:
                continue  # revoked while the batch was in flight
            for record in records:
                try:
                    task = DeliveryTask.from_message(record.value)
                except InvalidMessage as exc:
                    # Rare: awaited inline so the offset counts as finished only once the
                    # dead letter is acknowledged (at-least-once for bad input too).
                    await self._dead_letter(record, exc.reason)
                    if tp in self.assignment:
                        self.worker.skip(tp, record.offset)
                    continue
                self.worker.submit(task, tp, record.offset)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        assert self._dead_letters is not None
        ack = await send_dead_letter(
            self._dead_letters, self.settings.dead_letter_topic, record, reason
        )
        await ack

    def _apply_backpressure(self) -> None:
        assert self._consumer is not None and self.worker is not None
        outstanding = self.worker.outstanding
        if not self._paused and outstanding >= self._max_buffered:
            self._paused = True
            self._consumer.pause(*self.assignment)
            log.info("deliverer.paused", outstanding=outstanding)
        elif self._paused and outstanding < self._max_buffered // 2:
            self._paused = False
            self._consumer.resume(*self.assignment)
            log.info("deliverer.resumed", outstanding=outstanding)

    # -- commits, revocation, shutdown -----------------------------------------------

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self._commit(self.assignment)

    async def _commit(self, partitions: set[TopicPartition]) -> None:
        if self._consumer is None or self.worker is None:
            return
        async with self._commit_lock:
            positions = {
                tp: position
                for tp, position in self.worker.committable().items()
                if tp in partitions and self._committed.get(tp) != position
            }
            if not positions:
                return
            if self._attempt_log is not None:
                # Attempts of the deliveries behind these positions were recorded before
                # the positions moved: write them first, so a crash after the commit
                # cannot lose attempt-log rows of committed deliveries.
                try:
                    await self._attempt_log.flush()
                except Exception as exc:
                    log.warning("deliverer.commit_deferred", error=repr(exc))
                    return
            try:
                await self._consumer.commit(
                    {tp: OffsetAndMetadata(position, "") for tp, position in positions.items()}
                )
            except KafkaError as exc:
                log.warning("deliverer.commit_failed", error=str(exc))
                return
            self._committed.update(positions)

    async def _release(self, partitions: set[TopicPartition]) -> None:
        """Give up ``partitions``: drop queued work, finish in-flight, commit."""
        if not partitions or self.worker is None:
            return
        dropped = self.worker.revoke(partitions)
        finished = await self.worker.wait_in_flight(
            partitions, within=self.settings.delivery_timeout_s + 1
        )
        await self._commit(partitions)
        self.worker.forget(partitions)
        for tp in partitions:
            self._committed.pop(tp, None)
        log.info(
            "deliverer.partitions_released",
            partitions=sorted(tp.partition for tp in partitions),
            dropped=dropped,
            in_flight_finished=finished,
        )

    async def _shutdown(
        self, background: list[asyncio.Task[None]], scheduler: asyncio.Task[None]
    ) -> None:
        try:
            if self._aborted:
                return  # a simulated crash: commit nothing more
            if self.worker is not None and self._consumer is not None:
                await self._release(self.assignment)
            await scheduler  # it finishes its current attempts within the delivery timeout
        finally:
            for task in [scheduler, *background]:
                task.cancel()
            for task in [scheduler, *background]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.worker is not None:
                await self.worker.close(grace_s=0)
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await consumer.stop()
            if self._dead_letters is not None:
                await self._dead_letters.stop()
            if self._changes is not None:
                await self._changes.stop()
            if self._attempt_log is not None:
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await self._attempt_log.close()
            if isinstance(self._sender, AiohttpSender) and self._given_sender is None:
                await self._sender.close()
            if self._pool is not None:
                await self._pool.close()
            log.info("deliverer.stopped")


async def run_deliverer(settings: Settings) -> None:
    """Run a deliverer until SIGINT or SIGTERM (``hooklane deliverer``)."""
    await run_until_signalled(Deliverer(settings))
