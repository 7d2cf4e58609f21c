"""What a deliverer knows about the partitions it owns (no I/O).

- **Work per partition.** ``OwnedPartitions``: the offset tracker of each owned
  partition (a revoked and re-assigned partition gets a new one, which tells a live
  delivery from a stale one) and its requests in flight, which a revocation waits for.
- **Offsets.** Deliveries finish out of order (lanes run concurrently), but Kafka
  commits a single position per partition: "everything before this offset is done".
  ``OffsetTracker`` records which fetched offsets are still unfinished and answers the
  highest position that is safe to commit.
- **Ownership.** Whether a webhook is parked is known only for the partitions owned
  now: another deliverer may have parked it while it owned the partition.
  ``ParkedStates`` remembers, per owned partition, the parked state of webhooks whose
  lanes were forgotten; a revocation forgets the partition, so the next owner's first
  delivery of each webhook asks Postgres again (see ``Worker``).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable

from aiokafka import TopicPartition


class OffsetTracker:
    """Fetched-but-unfinished offsets of one partition.

    ``add`` every offset as it is fetched (in increasing order) and ``done`` it once
    its delivery finished. ``committable()`` is the Kafka commit position: one past the
    highest offset below which everything added is done; None until some progress
    was made.
    """

    __slots__ = ("_first", "_heap", "_last", "_open")

    def __init__(self) -> None:
        self._heap: list[int] = []  # unfinished offsets; may hold finished ones (lazy)
        self._open: set[int] = set()  # unfinished offsets
        self._first: int | None = None
        self._last: int | None = None

    def add(self, offset: int) -> None:
        """Record that ``offset`` was fetched and is not finished yet."""
        if self._last is not None and offset <= self._last:
            raise ValueError(f"offset {offset} added after {self._last}")
        if self._first is None:
            self._first = offset
        self._last = offset
        self._open.add(offset)
        heapq.heappush(self._heap, offset)

    def done(self, offset: int) -> None:
        """Record that ``offset`` finished; unknown or repeated offsets are ignored."""
        self._open.discard(offset)
        while self._heap and self._heap[0] not in self._open:
            heapq.heappop(self._heap)

    @property
    def last(self) -> int | None:
        """The highest offset added so far."""
        return self._last

    def committable(self) -> int | None:
        """The commit position (next offset to read) covering only finished work."""
        if self._last is None:
            return None
        if not self._heap:
            return self._last + 1
        lowest_open = self._heap[0]
        return lowest_open if lowest_open != self._first else None


class ParkedStates:
    """Parked state of webhooks, per partition, learned while the partition is owned.

    Only the partition's owner parks a webhook, so "not parked" stays true while it
    owns the partition; "parked" may go stale (the backlog scheduler unparks), which
    is safe: appending to a backlog that is gone answers False and the lane resumes.
    """

    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: dict[TopicPartition, dict[str, bool]] = {}

    def get(self, partition: TopicPartition, webhook_id: str) -> bool | None:
        """Whether ``webhook_id`` is parked; None when unknown since the assignment."""
        return self._states.get(partition, {}).get(webhook_id)

    def remember(self, partition: TopicPartition, webhook_id: str, parked: bool) -> None:
        """Keep a lane's parked state when the lane is forgotten."""
        self._states.setdefault(partition, {})[webhook_id] = parked

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions left this process: what was known of them may be stale."""
        for partition in partitions:
            self._states.pop(partition, None)


class OwnedPartitions:
    """The owned partitions' offset trackers and requests in flight (see the module doc)."""

    def __init__(self) -> None:
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._in_flight: dict[TopicPartition, int] = {}
        self._idle = asyncio.Condition()
        self._idle_waiters = 0  # notified only while someone waits (``wait_in_flight``)

    def tracker(self, partition: TopicPartition) -> OffsetTracker:
        """The tracker of an assigned partition, created on first use."""
        tracker = self._trackers.get(partition)
        if tracker is None:
            tracker = self._trackers[partition] = OffsetTracker()
        return tracker

    def is_current(self, partition: TopicPartition, tracker: OffsetTracker) -> bool:
        """Whether ``tracker`` is the partition's tracker now (not revoked since)."""
        return self._trackers.get(partition) is tracker

    def committable(self) -> dict[TopicPartition, int]:
        """The commit position of every partition that has one."""
        positions = {}
        for tp, tracker in self._trackers.items():
            position = tracker.committable()
            if position is not None:
                positions[tp] = position
        return positions

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop the trackers of partitions no longer owned (after their final commit)."""
        for tp in partitions:
            self._trackers.pop(tp, None)

    def request_started(self, partition: TopicPartition) -> None:
        """A request for a delivery of ``partition`` is in flight."""
        self._in_flight[partition] = self._in_flight.get(partition, 0) + 1

    async def request_ended(self, partition: TopicPartition) -> None:
        """That request ended (whatever its outcome)."""
        self._in_flight[partition] -= 1
        if self._idle_waiters:  # a revocation waits for in-flight requests
            async with self._idle:
                self._idle.notify_all()

    async def wait_in_flight(self, partitions: Iterable[TopicPartition], within: float) -> bool:
        """Wait up to ``within`` s until no request of ``partitions`` is in flight."""
        wanted = set(partitions)

        def quiet() -> bool:
            return not any(self._in_flight.get(tp, 0) for tp in wanted)

        self._idle_waiters += 1
        try:
            async with self._idle:
                try:
                    await asyncio.wait_for(self._idle.wait_for(quiet), within)
                except TimeoutError:
                    return False
            return True
        finally:
            self._idle_waiters -= 1
