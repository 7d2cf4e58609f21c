"""One consumer-group loop, shared by the router and the deliverer.

``GroupConsumer`` joins a consumer group and runs the loop both processes need; what
they do with the records is their ``Handler``:

- **poll** a batch and hand it to ``Handler.take``; a handler that could not take it
  (the router could not produce) has it read again from the committed offsets;
- **commit** what the handler says is finished (``Handler.committable``: one position
  per partition), after every poll, only when a position moved, and only once
  ``Handler.before_commit`` agrees (the deliverer writes the attempt log first). This
  is the one place offsets are committed;
- **backpressure**: with ``max_buffered``, fetching pauses while the handler holds that
  many unfinished records and resumes below half of it;
- **revocation**: the handler releases the partitions (finishing or dropping their
  work), their final positions are committed, then the handler forgets them. A batch
  being taken finishes first: revocation and ``take`` never interleave;
- **graceful leave** (``leave``): the same release for every owned partition, then
  the consumer stops and leaves the group, so the others rebalance at once.

Every partition that moves is logged as ``<name>.partitions_assigned`` /
``<name>.partitions_released`` with the partition numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Histogram

from dispatcher.kafka.connection import client_options
from dispatcher.settings import Settings

log = structlog.get_logger(__name__)

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord]]
POLL_TIMEOUT_MS = 100
RETRY_DELAY_S = 0.5
# A commit is a broker round trip taken with the loop held; polls come every few
# milliseconds under load, so commit at most this often (a crash repeats at most this
# much more work, which at-least-once allows).
COMMIT_INTERVAL_S = 0.5


class Handler(Protocol):
    """What a process does with the records of the partitions it owns."""

    @property
    def outstanding(self) -> int:
        """Records taken and not finished yet (for backpressure)."""
        ...

    async def take(self, batch: Batch) -> bool:
        """Take a polled batch; False: it could not, read it again from the commit."""
        ...

    def committable(self) -> dict[TopicPartition, int]:
        """The commit position of every partition with finished work."""
        ...

    async def before_commit(self) -> bool:
        """Make the work behind the positions durable; False defers the commit."""
        ...

    async def release(self, partitions: set[TopicPartition]) -> None:
        """Stop work on ``partitions`` (revoked, or leaving); finish what can be."""
        ...

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the bookkeeping of ``partitions`` after their final commit."""
        ...


# A static member (HOOKLANE_INSTANCE_ID) keeps its partitions while it restarts, so its
# session outlasts a restart; a dynamic one is given up on sooner (its partitions move).
STATIC_SESSION_TIMEOUT_MS = 30_000
DYNAMIC_SESSION_TIMEOUT_MS = 10_000


def membership(settings: Settings) -> dict[str, Any]:
    """The group-membership options of a router or deliverer consumer (DESIGN.md §10).

    With ``HOOKLANE_INSTANCE_ID`` the member is static (``group.instance.id``): it sends
    no LeaveGroup when it stops, and coming back within the session timeout it gets
    the same partitions without a rebalance of the whole group.
    """
    if settings.instance_id:
        return {
            "group_instance_id": settings.instance_id,
            "session_timeout_ms": STATIC_SESSION_TIMEOUT_MS,
        }
    return {"session_timeout_ms": DYNAMIC_SESSION_TIMEOUT_MS}


class GroupConsumer:
    """A consumer-group member running the loop of the module docstring."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str,
        settings: Settings,
        group_id: str,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        max_buffered: int | None = None,
        poll_timeout_ms: int = POLL_TIMEOUT_MS,
        commit_duration: Histogram | None = None,
        **options: Any,
    ) -> None:
        self._handler = handler
        self._name = name
        self._settings = settings
        self._group_id = group_id
        self._topics = list(topics)
        self._pattern = pattern
        self._max_buffered = max_buffered
        self._poll_timeout_ms = poll_timeout_ms
        self._options = options
        # ``hooklane_commit_duration_seconds{group}``; None: not measured.
        self._commit_duration = commit_duration
        self._consumer: AIOKafkaConsumer | None = None
        # Held while a batch is taken and committed, and while partitions are released.
        self._lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._committed: dict[TopicPartition, int] = {}
        # Partitions assigned and not released yet: what the handler may hold work of.
        self._held: set[TopicPartition] = set()
        self._paused = False

    @property
    def assignment(self) -> set[TopicPartition]:
        """The partitions owned now."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    async def start(self) -> None:
        """Join the group (the first assignment arrives with the first polls)."""
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self._options,
        )
        listener = _Rebalance(self)
        if self._pattern is not None:
            consumer.subscribe(pattern=self._pattern, listener=listener)
        else:
            consumer.subscribe(self._topics, listener=listener)
        await consumer.start()
        self._consumer = consumer

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll, hand over, commit and apply backpressure until ``stopping`` is set."""
        assert self._consumer is not None, "start() first"
        next_commit = 0.0
        while not stopping.is_set():
            consumer = self._consumer
            if consumer is None:  # being rebuilt: its start failed, try again
                await self._replace(stopping)
                continue
            try:
                batch = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
            except KafkaError as exc:
                if coordination_ended(consumer):
                    log.warning(f"{self._name}.consumer_replaced", error=str(exc))
                    await self._replace(stopping)
                    continue
                # The client reconnects by itself; log and keep polling.
                log.warning(f"{self._name}.fetch_failed", error=str(exc))
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            async with self._lock:
                owned = self.assignment
                # Records of partitions revoked while the batch was in flight are skipped.
                batch = {tp: records for tp, records in batch.items() if tp in owned}
                if batch and not await self._handler.take(batch):
                    await asyncio.sleep(RETRY_DELAY_S)
                    await self._rewind(set(batch))
                if time.monotonic() >= next_commit:
                    await self.commit()
                    next_commit = time.monotonic() + COMMIT_INTERVAL_S
            self._apply_backpressure()

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit the handler's positions of ``partitions`` (default: all owned)."""
        consumer = self._consumer
        if consumer is None:
            return
        wanted = self.assignment if partitions is None else partitions
        async with self._commit_lock:
            positions = {
                tp: position
                for tp, position in self._handler.committable().items()
                if tp in wanted and self._committed.get(tp) != position
            }
            if not positions or not await self._handler.before_commit():
                return
            started = time.perf_counter()
            try:
                await consumer.commit(
                    {tp: OffsetAndMetadata(position, "") for tp, position in positions.items()}
                )
            except KafkaError as exc:
                # Not committed: the partitions' next reader repeats some work (duplicates).
                log.warning(f"{self._name}.commit_failed", error=str(exc))
                return
            if self._commit_duration is not None:
                self._commit_duration.observe(time.perf_counter() - started)
            self._committed.update(positions)

    async def _replace(self, stopping: asyncio.Event) -> None:
        """Drop a consumer whose group coordination ended and join again with a new one.

        aiokafka runs the group membership in one task; when it ends with an error (seen
        on Apache Kafka: an AssertionError in its coordination routine after the active
        KRaft controller was killed), every later poll raises it again and the member
        never fetches, commits or rebalances again. Its partitions' work is released
        uncommitted (the handler finishes what it can) and a new consumer reads them
        again from the last commit: duplicates, never a gap or a reordering.
        """
        async with self._lock:
            held = self._held | self.assignment
            if held:
                await self._handler.release(held)
                self._handler.forget(held)
                log.info(f"{self._name}.partitions_released", partitions=_numbers(held))
            self._held.clear()
            self._committed.clear()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError):  # its dead coordination may re-raise
                await consumer.stop()
        self._paused = False
        while not stopping.is_set():
            try:
                await self.start()
                return
            except KafkaError as exc:
                log.warning(f"{self._name}.rejoin_failed", error=str(exc))
                await asyncio.sleep(RETRY_DELAY_S)

    async def leave(self) -> None:
        """Graceful leave: release every owned partition, commit, leave the group."""
        if self._consumer is not None:
            async with self._lock:
                await self._release(self.assignment)
        await self.close()

    async def close(self) -> None:
        """Stop the consumer (it leaves the group) without releasing anything first."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            await self._release(partitions)

    async def _release(self, partitions: set[TopicPartition]) -> None:
        if not partitions:
            return
        await self._handler.release(partitions)
        await self.commit(partitions)
        self._handler.forget(partitions)
        self._held -= partitions
        for tp in partitions:
            self._committed.pop(tp, None)
        log.info(f"{self._name}.partitions_released", partitions=_numbers(partitions))

    async def _rewind(self, partitions: set[TopicPartition]) -> None:
        assert self._consumer is not None
        owned = partitions & self.assignment
        if not owned:
            return  # revoked meanwhile: the next owner reads from the commit anyway
        try:
            committed = await self._consumer.seek_to_committed(*owned)
            # seek_to_committed leaves a partition with no commit yet where it is, which
            # would skip the batch: those start over from the beginning instead.
            never = [tp for tp, offset in committed.items() if not offset]
            if never:
                await self._consumer.seek_to_beginning(*never)
        except KafkaError as exc:
            log.warning(f"{self._name}.rewind_failed", error=str(exc))

    def _apply_backpressure(self) -> None:
        if self._max_buffered is None or self._consumer is None:
            return
        outstanding = self._handler.outstanding
        if not self._paused and outstanding >= self._max_buffered:
            self._paused = True
            self._consumer.pause(*self.assignment)
            log.info(f"{self._name}.paused", outstanding=outstanding)
        elif self._paused and outstanding < self._max_buffered // 2:
            self._paused = False
            self._consumer.resume(*self.assignment)
            log.info(f"{self._name}.resumed", outstanding=outstanding)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: GroupConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._consumer._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._consumer._held.update(assigned)
        log.info(f"{self._consumer._name}.partitions_assigned", partitions=_numbers(set(assigned)))


def coordination_ended(consumer: AIOKafkaConsumer) -> bool:
    """Whether aiokafka's group coordination task of ``consumer`` has ended (it runs
    until the consumer stops; ended early, it ended with an error). Private attributes
    of aiokafka 0.14: a consumer without them counts as alive."""
    coordinator = getattr(consumer, "_coordinator", None)
    task = getattr(coordinator, "_coordination_task", None)
    return isinstance(task, asyncio.Future) and task.done()


def _numbers(partitions: set[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)
