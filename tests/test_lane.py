"""Lane: the FIFO and failure state of one webhook (pure)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from dispatcher.deliverer.lane import Lane, Pending
from dispatcher.deliverer.partitions import OffsetTracker
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.subscription.adaptive_window import Signal

TP = TopicPartition("deliveries", 0)


def _entry(offset: int) -> Pending:
    event = Event(f"e{offset}", "T", "tenant", 0, {})
    return Pending(DeliveryTask("w", event), TP, offset, OffsetTracker())


@pytest.mark.parametrize(
    ("limit", "failures", "in_flight", "expected"),
    [
        (1, 0, 0, True),
        (1, 0, 1, False),  # ordered: one at a time
        (4, 0, 3, True),  # unordered: up to its limit
        (4, 0, 4, False),
        (4, 1, 0, True),  # failing: only the retry of the head...
        (4, 1, 1, False),  # ...one request at a time
    ],
)
def test_ready_respects_the_in_flight_limit(
    limit: int, failures: int, in_flight: int, expected: bool
) -> None:
    """A lane may send while below its limit, and below one while its endpoint fails."""
    lane = Lane("w", TP)
    lane.limit = limit
    lane.failures = failures
    lane.in_flight = in_flight
    lane.push(_entry(1))
    assert lane.ready(now=100.0) is expected


def test_failed_head_goes_back_first_and_waits_for_its_backoff() -> None:
    """A failed delivery is retried before later ones, not before next_attempt_at."""
    lane = Lane("w", TP)
    for offset in (1, 2, 3):
        lane.push(_entry(offset))
    head = lane.take(0.0)
    lane.failed(head, now=10.0, next_attempt_at=12.0)
    assert [e.offset for e in lane.pending] == [1, 2, 3]
    assert not lane.ready(now=11.9)
    assert lane.ready(now=12.0)
    assert lane.failing_since == 10.0 and lane.failures == 1
    lane.take(0.0)
    lane.succeeded()
    assert not lane.failing and lane.next_attempt_at == 0.0


def test_unordered_failures_return_in_offset_order() -> None:
    """Several failures coming back out of order are re-queued in their original order."""
    lane = Lane("w", TP)
    lane.limit = 3
    for offset in (1, 2, 3, 4):
        lane.push(_entry(offset))
    first, second, third = lane.take(0.0), lane.take(0.0), lane.take(0.0)
    lane.failed(third, now=1.0, next_attempt_at=1.0)
    lane.failed(first, now=1.0, next_attempt_at=1.0)
    lane.failed(second, now=1.0, next_attempt_at=1.0)
    assert [e.offset for e in lane.pending] == [1, 2, 3, 4]


def test_drop_removes_matching_pending_deliveries() -> None:
    """Revocation drops the pending deliveries of a partition and keeps the rest in order."""
    lane = Lane("w", TP)
    other = TopicPartition("deliveries", 1)
    entries = [_entry(1), _entry(2), _entry(3)]
    entries[1].partition = other
    for entry in entries:
        lane.push(entry)
    dropped = lane.drop(lambda entry: entry.partition == other)
    assert [e.offset for e in dropped] == [2]
    assert [e.offset for e in lane.pending] == [1, 3]


def test_pace_spaces_requests_and_a_new_rate_gets_a_new_bucket() -> None:
    """``pace`` answers 0 or the wait of the rate limit; changing the rate rebuilds it."""
    lane = Lane("w", TP)
    assert lane.pace(None, 10.0) == 0.0 and not lane.pacing(10.0)
    assert lane.pace(5.0, 10.0) == 0.0
    assert lane.pace(5.0, 10.1) == pytest.approx(0.1)
    assert lane.pacing(10.1) and not lane.pacing(10.2)
    assert lane.pace(1.0, 10.1) == 0.0  # new limit: a fresh bucket with its burst
    assert lane.pace(1.0, 10.1) == pytest.approx(1.0)
    assert lane.pace(None, 10.1) == 0.0 and lane.bucket is None


def test_adapt_follows_ordering_and_observe_moves_the_limit() -> None:
    """Ordered lanes send one at a time; unordered ones follow their window, capped."""
    lane = Lane("w", TP)
    lane.adapt(None)
    assert (lane.window, lane.limit) == (None, 1)
    lane.observe(Signal.FAST, 0.0, 1.0)  # ordered: nothing to adapt
    assert lane.limit == 1
    lane.adapt(8)
    assert lane.limit == 1  # a window starts at 1 ...
    for n in range(5):
        lane.observe(Signal.FAST, float(n), float(n) + 0.1)
    assert lane.limit == 6  # ... and grows by one per fast answer in slow start
    lane.adapt(4)  # the ceiling was lowered: the window shrinks to it
    assert lane.limit == 4
    lane.observe(Signal.OVERLOAD, 10.0, 10.1)
    assert lane.limit == 2
    lane.adapt(8)  # raised again: the window keeps its size
    assert lane.limit == 2
