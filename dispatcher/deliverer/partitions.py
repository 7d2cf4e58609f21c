"""What a deliverer knows about the partitions it owns (pure, no I/O).

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
