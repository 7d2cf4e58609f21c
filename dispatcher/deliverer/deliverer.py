"""The deliverer process: deliveries topic in, signed HTTP requests out, offsets committed.

Consumer group ``hooklane-deliverer`` reads ``<prefix>deliveries`` (keyed by webhook
id, so each webhook belongs to one deliverer at a time) through the shared
``GroupConsumer`` loop and hands every task to the ``Worker`` (lanes, caps, retries).
Offsets are committed after every poll up to what each partition's ``OffsetTracker``
allows: the highest offset below which every delivery finished, once the attempt log
behind it is written. Too many unfinished deliveries pause the partitions until the
backlog drains below half (backpressure). Lanes failing beyond the in-memory window
are parked in Postgres; the ``BacklogScheduler`` running alongside retries and drains
them, and every attempt goes to the ``AttemptLog``. Both announce a webhook's trouble
(disabled, parked, recovered, gave up) to its tenant's other webhooks through the
``Announcer``, which publishes with its own ``Producer``, off the delivery path.

On revocation and on ``stop()`` the deliverer stops taking work from those partitions,
lets in-flight requests finish within the delivery timeout, commits, and (on stop)
leaves the group. Cancelling ``run()`` is an abrupt stop: nothing more is committed,
as after a crash.

Run with ``hooklane deliverer`` or ``python -m dispatcher.deliverer``; tests run
``Deliverer(settings).run()`` as a task (see ``tests/support/pipeline.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import structlog
from aiokafka import ConsumerRecord, TopicPartition

from dispatcher.deliverer.announcer import Announcer
from dispatcher.deliverer.attempt_log import AttemptLog
from dispatcher.deliverer.scheduler import BacklogScheduler
from dispatcher.deliverer.target_cache import TargetCache
from dispatcher.deliverer.worker import Clock, Worker
from dispatcher.delivery.attempt import AttemptResult
from dispatcher.delivery.http.factory import make_sender
from dispatcher.delivery.http.metered import MeteredSender
from dispatcher.delivery.http.sender import ClosableSender, Sender
from dispatcher.delivery.secrets import SecretBox
from dispatcher.kafka.dead_letter import send_dead_letter
from dispatcher.kafka.group_consumer import COMMIT_INTERVAL_S, Batch, GroupConsumer, membership
from dispatcher.kafka.producer import Producer
from dispatcher.kafka.topic_admin import require_topics
from dispatcher.messages.wire import DeliveryTask, InvalidMessage
from dispatcher.ops.metrics import DelivererMetrics
from dispatcher.settings import Settings
from dispatcher.store import db
from dispatcher.store.db import TRANSIENT_ERRORS
from dispatcher.store.notifications import Notifications
from dispatcher.store.webhook_changes import WebhookChanges

__all__ = ["GROUP_ID", "Deliverer"]

log = structlog.get_logger(__name__)

GROUP_ID = "hooklane-deliverer"
MAX_POLL_RECORDS = 500
# Unfinished deliveries above which fetching pauses; it resumes below half of it.
MAX_BUFFERED = 5000
# Attempt-log rows per transaction: each costs a transaction and a health UPDATE, so
# the half second between commits at 10,000 deliveries/s fits in one.
ATTEMPT_BATCH = 5000
# Deliveries behind stuck requests kept beyond the buffer, in buffers (see ``outstanding``).
STUCK_ALLOWANCE = 3


class Deliverer:
    """One deliverer process's worth of work: ``start()``, ``run()``, ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        sender: Sender | None = None,
        group_id: str = GROUP_ID,
        max_buffered: int = MAX_BUFFERED,
        metrics: DelivererMetrics | None = None,
        clock: Clock = time.time,
    ) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS is not set")
        self.settings = settings
        self._group_id = group_id
        self._given_sender = sender
        self._max_buffered = max_buffered
        self._metrics = metrics  # None: not counted (tests, benchmarks)
        self._clock = clock  # the wall clock of lanes, scheduler and signatures
        self._stopping = asyncio.Event()
        self._crashed: BaseException | None = None
        self._pool: asyncpg.Pool | None = None
        self._sender: Sender | None = None
        self._notifications: Notifications | None = None
        self._changes: WebhookChanges | None = None
        self._group: GroupConsumer | None = None
        self._attempt_log: AttemptLog | None = None
        self._scheduler: BacklogScheduler | None = None
        self._producer: Producer | None = None
        self._announcer: Announcer | None = None
        self.worker: Worker | None = None

    @property
    def assignment(self) -> set[TopicPartition]:
        """The deliveries partitions this deliverer owns now."""
        return self._group.assignment if self._group is not None else set()

    async def start(self) -> None:
        """Check the topics, connect to Postgres and join the consumer group."""
        settings = self.settings
        await require_topics(settings)
        self._pool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
        targets = TargetCache.from_store(self._pool, SecretBox.from_setting(settings.secret_key))
        self._sender = self._given_sender or make_sender(settings)
        metrics = self._metrics
        # Every attempt (lanes and scheduler alike) passes the one HTTP seam: measured there.
        sender = self._sender if metrics is None else MeteredSender(self._sender, metrics)
        # Written with each commit (``before_commit``) and at the same pace between them:
        # fewer, larger batches (each costs a transaction and a health UPDATE).
        self._attempt_log = AttemptLog(
            self._pool,
            flush_interval=COMMIT_INTERVAL_S,
            max_batch=ATTEMPT_BATCH,
            metrics=metrics,
        )
        self._attempt_log.start()
        self._producer = Producer(settings)
        await self._producer.start()
        attempt_log = self._attempt_log
        announcer = self._announcer = Announcer(self._producer.publish_event, targets.get)

        def attempted(result: AttemptResult) -> None:
            attempt_log.record(result)
            announcer.attempted(result)

        worker = self.worker = Worker(
            settings,
            sender,
            targets,
            self._pool,
            pause_limit=settings.pause_max_backlog,
            on_attempt=attempted,
            # A failing lane may hold at most 5% of the buffer before it parks.
            park_early_above=max(1, self._max_buffered // 20),
            announcer=announcer,
            metrics=metrics,
            clock=self._clock,
        )
        # One listen connection for the process: the scheduler's wake-ups and the
        # target cache's invalidations share it.
        notifications = self._notifications = Notifications(settings.database_url)
        await notifications.start()
        self._scheduler = BacklogScheduler(
            settings,
            self._pool,
            sender,
            targets.get,
            self._attempt_log,
            notifications,
            announcer=announcer,
            metrics=metrics,
            clock=self._clock,
        )

        async def changed(webhook_id: str) -> None:
            targets.invalidate(webhook_id)
            worker.webhook_changed(webhook_id)

        async def resync() -> None:
            await targets.refresh_all()
            for webhook_id in list(worker.lanes):
                worker.webhook_changed(webhook_id)

        self._changes = WebhookChanges(notifications, changed, resync)
        await self._changes.start()
        self._group = GroupConsumer(
            self,
            name="deliverer",
            settings=settings,
            group_id=self._group_id,
            topics=[settings.deliveries_topic],
            max_buffered=self._max_buffered,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_poll_records=MAX_POLL_RECORDS,
            commit_duration=metrics.commit_duration if metrics is not None else None,
            # A revocation waits for in-flight requests (up to the delivery timeout).
            rebalance_timeout_ms=int((settings.delivery_timeout_s + 10) * 1000),
            **membership(settings),
        )
        await self._group.start()
        log.info("deliverer.started", topic=settings.deliveries_topic)

    def stop(self) -> None:
        """Ask ``run()`` to stop taking work, finish in-flight, commit and leave."""
        self._stopping.set()

    async def run(self) -> None:
        """Deliver until ``stop()`` (graceful) or cancellation (abrupt: nothing committed)."""
        if self._group is None:
            await self.start()
        assert self._group is not None and self.worker is not None
        assert self._scheduler is not None
        background = [
            asyncio.create_task(self.worker.run(), name="deliverer-dispatch"),
            asyncio.create_task(self._scheduler.run(), name="deliverer-backlog"),
        ]
        for task in background:
            task.add_done_callback(self._background_ended)
        graceful = True
        try:
            await self._group.run(self._stopping)
        except asyncio.CancelledError:
            graceful = False  # an abrupt stop, as in a crash: commit nothing more
            raise
        finally:
            try:
                if graceful:
                    self._scheduler.stop()
                    await self._group.leave()
                    await background[1]  # the scheduler finishes within the delivery timeout
            finally:
                await self._close(background)
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

    async def _close(self, background: list[asyncio.Task[None]]) -> None:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.worker is not None:
            await self.worker.close(grace_s=0)
        if self._group is not None:
            await self._group.close()
        if self._announcer is not None:
            await self._announcer.close()
        if self._producer is not None:
            with contextlib.suppress(Exception):  # best effort, as every announcement
                await self._producer.stop()
        if self._changes is not None:
            await self._changes.stop()
        if self._notifications is not None:
            await self._notifications.stop()
        if self._attempt_log is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._attempt_log.close()
        if isinstance(self._sender, ClosableSender) and self._given_sender is None:
            await self._sender.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("deliverer.stopped")

    # -- the consumer loop's handler (dispatcher.kafka.group_consumer.Handler) --------------------

    @property
    def outstanding(self) -> int:
        """Deliveries taken and not finished yet, as backpressure counts them.

        Those queued behind a request stuck in flight (``Worker.stuck_pending``) do not
        count, up to ``STUCK_ALLOWANCE`` buffers' worth: a hanging endpoint cannot park
        until its request times out, and must not pause fetching for everybody else
        meanwhile (memory stays bounded by ``1 + STUCK_ALLOWANCE`` buffers).
        """
        if self.worker is None:
            return 0
        stuck = min(self.worker.stuck_pending(), STUCK_ALLOWANCE * self._max_buffered)
        return self.worker.outstanding - stuck

    async def take(self, batch: Batch) -> bool:
        """Hand every task of ``batch`` to its lane; invalid ones go to the dead letters."""
        assert self.worker is not None
        for tp, records in batch.items():
            for record in records:
                try:
                    task = DeliveryTask.from_message(record.value)
                except Exception as exc:  # no record can stop the partition
                    if isinstance(exc, InvalidMessage):
                        reason, category = exc.reason, exc.category
                    else:
                        log.exception(
                            "deliverer.internal_error",
                            topic=record.topic,
                            partition=record.partition,
                            offset=record.offset,
                        )
                        reason = f"internal error: {type(exc).__name__}: {exc}"
                        category = "internal"
                    # Rare: awaited inline so the offset counts as finished only once the
                    # dead letter is acknowledged (at-least-once for bad input too).
                    await self._dead_letter(record, reason)
                    if self._metrics is not None:
                        self._metrics.dead_lettered(category).inc()
                    self.worker.skip(tp, record.offset)
                    continue
                self.worker.submit(task, tp, record.offset)
        return True

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the offset below which every delivery finished."""
        return self.worker.partitions.committable() if self.worker is not None else {}

    async def before_commit(self) -> bool:
        """Write the attempts of the deliveries behind the positions first.

        So a deliverer crash after the commit cannot lose attempt-log rows of committed
        deliveries (the batches commit asynchronously in Postgres: a crash of the Postgres
        server itself may lose its last fraction of a second, see docs/SECURITY.md).
        """
        if self._attempt_log is None:
            return True
        try:
            await self._attempt_log.flush()
        except Exception as exc:
            log.warning("deliverer.commit_deferred", error=repr(exc))
            return False
        return True

    async def release(self, partitions: set[TopicPartition]) -> None:
        """Drop the queued work of ``partitions`` and let their in-flight requests finish."""
        if self.worker is None:
            return
        dropped = self.worker.revoke(partitions)
        finished = await self.worker.partitions.wait_in_flight(
            partitions, within=self.settings.delivery_timeout_s + 1
        )
        log.info("deliverer.lanes_released", dropped=dropped, in_flight_finished=finished)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """The partitions' final positions are committed: drop their trackers."""
        if self.worker is not None:
            self.worker.partitions.forget(partitions)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        assert self._producer is not None  # one producer: dead letters and announcements
        ack = await send_dead_letter(
            self._producer.kafka, self.settings.dead_letter_topic, record, reason
        )
        await ack
