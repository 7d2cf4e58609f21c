"""A webhook's lane: its FIFO of pending deliveries and its endpoint's failure state.

Pure bookkeeping, no I/O: the worker decides when a lane may send (``ready``), takes
the next delivery (``take``) and reports how it went (``succeeded``, ``failed``,
``finished``). Backoff belongs to the endpoint, not the message: while the lane is
failing it sends only one request at a time (the retry of its head) and nothing before
``next_attempt_at``.

Where its deliveries go is one ``Where`` state, changed only by the lane's own methods
(the worker and ``parking`` ask, like asyncio's ``Future``)::

    UNCHECKED --checked_parked(parked?)--> MEMORY | PARKED
    MEMORY | PARKED --start_storing()--> STORING --stored(parked?)--> PARKED | MEMORY
    any --revoked()--> UNCHECKED (STORING: STORING_UNCHECKED, UNCHECKED once stored)

``UNCHECKED``: whether the webhook is parked is not known for the current ownership of
its partition (another deliverer may have parked it); nothing is sent ahead of a
backlog that may exist. ``STORING``: its deliveries are being written to the backlog,
one writer at a time.

A lane also carries its webhook's pacing: a token bucket for a ``rate_limit``
(``pace``) and, for unordered webhooks, the adaptive window that sets ``limit``
(``adapt``, ``observe``). Both live as long as the lane; a lane whose bucket is not full
again is kept (``pacing``), so forgetting and re-creating it never buys an extra request.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import TopicPartition

from dispatcher.deliverer.partitions import OffsetTracker
from dispatcher.delivery.policy import Streak
from dispatcher.messages.wire import DeliveryTask
from dispatcher.subscription.adaptive_window import AdaptiveWindow, Signal
from dispatcher.subscription.rate_limit import TokenBucket, rebuilt

# Additive increase of the adaptive window per round of fast answers. Each probe past a
# receiver's capacity costs one 429/503 and halves the window: at +0.5 a receiver of
# capacity 4 saw about one overload in 20 answers (measured, tests/test_subscription_pacing.py),
# at +0.25 about one in 40; the window refills from half in about 10 rounds.
WINDOW_INCREASE = 0.25


@dataclass(eq=False, slots=True)
class Pending:
    """One delivery task read from the deliveries topic, with its origin."""

    task: DeliveryTask
    partition: TopicPartition
    offset: int
    # The tracker of the assignment it was read under; a revoked partition gets a new one.
    tracker: OffsetTracker
    attempts: int = 0


class Where(enum.Enum):
    """Where a lane's deliveries go (see the module docstring for the transitions)."""

    UNCHECKED = "unchecked"  # parked or not: unknown since the partition was assigned
    MEMORY = "memory"  # delivered from memory
    PARKED = "parked"  # appended to the webhook's Postgres backlog
    STORING = "storing"  # a write to the backlog is under way
    STORING_UNCHECKED = "storing_unchecked"  # revoked during the write: UNCHECKED after it


# After a write ended: what follows each writing state.
_AFTER_WRITE = {Where.STORING: None, Where.STORING_UNCHECKED: Where.UNCHECKED}


class Lane:
    """The FIFO of one webhook (see the module docstring)."""

    __slots__ = (
        "bucket",
        "busy_since",
        "failing_since",
        "failures",
        "in_flight",
        "limit",
        "next_attempt_at",
        "partition",
        "pending",
        "webhook_id",
        "where",
        "window",
    )

    def __init__(
        self, webhook_id: str, partition: TopicPartition, where: Where = Where.MEMORY
    ) -> None:
        self.webhook_id = webhook_id
        # The deliveries partition the webhook's tasks are read from (keyed by its id).
        self.partition = partition
        self.pending: deque[Pending] = deque()
        self.in_flight = 0
        # When the lane last started a request (the worker's clock): with requests in
        # flight and none started for long, the lane is stuck on them.
        self.busy_since = 0.0
        # Concurrent requests allowed while healthy: 1 for ordered webhooks.
        self.limit = 1
        self.failures = 0
        self.failing_since: float | None = None
        self.next_attempt_at = 0.0
        # Read it freely; change it only through the transition methods below.
        self.where = where
        # The rate limit's bucket (None: unlimited) and the adaptive window (unordered only).
        self.bucket: TokenBucket | None = None
        self.window: AdaptiveWindow | None = None

    def __repr__(self) -> str:
        return (
            f"Lane({self.webhook_id}, pending={len(self.pending)}, in_flight={self.in_flight},"
            f" failures={self.failures})"
        )

    @property
    def idle(self) -> bool:
        """Nothing pending, in flight or being stored: the lane may be forgotten."""
        return not self.pending and not self.in_flight and not self.storing

    @property
    def checked(self) -> bool:
        """Whether the parked state is known for the current ownership of the partition."""
        return self.where is not Where.UNCHECKED and self.where is not Where.STORING_UNCHECKED

    @property
    def parked(self) -> bool:
        """Whether its deliveries go to the webhook's backlog (no write under way)."""
        return self.where is Where.PARKED

    @property
    def storing(self) -> bool:
        """Whether a write to the backlog is under way."""
        return self.where is Where.STORING or self.where is Where.STORING_UNCHECKED

    # -- where the deliveries go ----------------------------------------------------

    def checked_parked(self, parked: bool) -> None:
        """Postgres answered whether the webhook is parked (ignored if already known).

        During a write the write decides; the lane only counts as checked again.
        """
        if self.where is Where.UNCHECKED:
            self.where = Where.PARKED if parked else Where.MEMORY
        elif self.where is Where.STORING_UNCHECKED:
            self.where = Where.STORING

    def revoked(self) -> None:
        """Its partition left this process: if it comes back, ask Postgres again."""
        self.where = Where.STORING_UNCHECKED if self.storing else Where.UNCHECKED

    def start_storing(self) -> bool:
        """Become the backlog's one writer; False when a write is under way already."""
        if self.storing:
            return False
        self.where = Where.STORING if self.checked else Where.STORING_UNCHECKED
        return True

    def stored(self, parked: bool) -> None:
        """The write ended: the webhook is ``parked`` (or back in memory)."""
        after = _AFTER_WRITE.get(self.where)
        if after is not None:
            self.where = after
        else:
            self.where = Where.PARKED if parked else Where.MEMORY

    def wait_until(self, when: float) -> None:
        """Send nothing before ``when`` (a backoff, a rate limit, a store retry)."""
        self.next_attempt_at = max(self.next_attempt_at, when)

    @property
    def failing(self) -> bool:
        """Whether the endpoint's last attempt failed."""
        return self.failures > 0

    def streak(self) -> Streak:
        """The failure streak its next answer is judged under (``policy.next_step``)."""
        return Streak(self.failures, self.failing_since, webhook_failing_since=self.failing_since)

    def pacing(self, now: float) -> bool:
        """Whether the rate limit still remembers a recent request (its bucket is not full)."""
        return self.bucket is not None and self.bucket.full_at() > now

    def pace(self, rate: float | None, now: float) -> float:
        """Take a token of the ``rate`` limit for a request at ``now``: 0.0, or the wait.

        A changed rate gets a new bucket; waiting takes no token.
        """
        self.bucket = rebuilt(self.bucket, rate)
        return 0.0 if self.bucket is None else self.bucket.acquire(now)

    def adapt(self, ceiling: int | None) -> None:
        """Follow the webhook's ordering: None (ordered) sends one at a time, else AIMD.

        A changed ceiling keeps the window's current size (within the new bounds).
        """
        if ceiling is None:
            self.window = None
        elif self.window is None:
            self.window = AdaptiveWindow(ceiling, increase=WINDOW_INCREASE)
        elif self.window.ceiling != ceiling:
            self.window.ceiling = ceiling
            self.window.window = min(self.window.window, float(ceiling))
        self.limit = 1 if self.window is None else self.window.limit

    def observe(self, signal: Signal, started_at: float, now: float) -> None:
        """Fold an answer into the adaptive window (nothing for ordered lanes)."""
        if self.window is not None:
            self.limit = self.window.observe(signal, started_at, now)

    def push(self, entry: Pending) -> None:
        """Append a delivery at the tail."""
        self.pending.append(entry)

    def capacity(self) -> int:
        """Requests that may be in flight now: one while failing, else ``limit``."""
        return 1 if self.failing else max(1, self.limit)

    def ready(self, now: float) -> bool:
        """Whether the lane may send its next delivery at ``now``."""
        return (
            self.where is Where.MEMORY
            and bool(self.pending)
            and self.in_flight < self.capacity()
            and now >= self.next_attempt_at
        )

    def take(self, now: float) -> Pending:
        """Start the next delivery (the head) at ``now``."""
        self.in_flight += 1
        self.busy_since = now
        return self.pending.popleft()

    def succeeded(self) -> None:
        """A delivery got a 2xx: the endpoint is healthy again."""
        self.in_flight -= 1
        self.recovered()

    def failed(self, entry: Pending, now: float, next_attempt_at: float) -> None:
        """A delivery failed and will be retried first, not before ``next_attempt_at``."""
        self.in_flight -= 1
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        self.next_attempt_at = max(self.next_attempt_at, next_attempt_at)
        self._insert_in_offset_order(entry)

    def recovered(self) -> None:
        """Forget the failure streak (the backlog scheduler drained the webhook)."""
        self.failures = 0
        self.failing_since = None
        self.next_attempt_at = 0.0

    def finished(self) -> None:
        """An in-flight delivery left the lane without a 2xx: given up, moved to the
        backlog, or its result ignored (partition revoked, shutdown)."""
        self.in_flight -= 1

    def drain(self) -> list[Pending]:
        """Remove and return every pending delivery, in order."""
        drained = list(self.pending)
        self.pending.clear()
        return drained

    def drop(self, predicate: Callable[[Pending], bool]) -> list[Pending]:
        """Remove and return the pending deliveries matching ``predicate``."""
        dropped = [entry for entry in self.pending if predicate(entry)]
        if dropped:
            self.pending = deque(entry for entry in self.pending if not predicate(entry))
        return dropped

    def requeue(self, entry: Pending) -> None:
        """Put a delivery back in its place (by offset) without touching the streak."""
        self._insert_in_offset_order(entry)

    def _insert_in_offset_order(self, entry: Pending) -> None:
        # Ordered lanes have one in flight, so this is the head; unordered lanes may
        # have several failures coming back: keep them in their original order.
        position = (entry.partition, entry.offset)
        index = next(
            (
                n
                for n, other in enumerate(self.pending)
                if (other.partition, other.offset) > position
            ),
            len(self.pending),
        )
        self.pending.insert(index, entry)
