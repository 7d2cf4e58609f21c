"""Where a lane's deliveries go (``Lane.where``): the transitions the lane owns (pure)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import TopicPartition

from dispatcher.deliverer.lane import Lane, Pending, Where
from dispatcher.deliverer.partitions import OffsetTracker
from dispatcher.messages.wire import DeliveryTask, Event

TP = TopicPartition("deliveries", 0)

Change = Callable[[Lane], object]

CHECKED_PARKED: Change = lambda lane: lane.checked_parked(True)  # noqa: E731
CHECKED_NOT_PARKED: Change = lambda lane: lane.checked_parked(False)  # noqa: E731
REVOKED: Change = Lane.revoked
START_STORING: Change = Lane.start_storing
STORED_PARKED: Change = lambda lane: lane.stored(True)  # noqa: E731
STORED_IN_MEMORY: Change = lambda lane: lane.stored(False)  # noqa: E731


@pytest.mark.parametrize(
    ("start", "changes", "expected"),
    [
        (Where.UNCHECKED, [CHECKED_PARKED], Where.PARKED),
        (Where.UNCHECKED, [CHECKED_NOT_PARKED], Where.MEMORY),
        (Where.MEMORY, [CHECKED_PARKED], Where.MEMORY),  # known already: a late answer
        (Where.MEMORY, [START_STORING, STORED_PARKED], Where.PARKED),
        (Where.MEMORY, [START_STORING, STORED_IN_MEMORY], Where.MEMORY),  # the write failed
        (Where.PARKED, [START_STORING, STORED_IN_MEMORY], Where.MEMORY),  # unparked meanwhile
        (Where.MEMORY, [REVOKED], Where.UNCHECKED),
        (Where.PARKED, [REVOKED], Where.UNCHECKED),
        # Revoked during a write: the write ends, and the lane asks Postgres again.
        (Where.MEMORY, [START_STORING, REVOKED], Where.STORING_UNCHECKED),
        (Where.MEMORY, [START_STORING, REVOKED, STORED_PARKED], Where.UNCHECKED),
        # An answer during the write: the write decides where the deliveries go.
        (Where.MEMORY, [START_STORING, REVOKED, CHECKED_NOT_PARKED], Where.STORING),
        (Where.MEMORY, [START_STORING, REVOKED, CHECKED_NOT_PARKED, STORED_PARKED], Where.PARKED),
        (Where.UNCHECKED, [START_STORING], Where.STORING_UNCHECKED),
    ],
)
def test_where_the_deliveries_go(start: Where, changes: list[Change], expected: Where) -> None:
    """Each transition leads where the lane's docstring says."""
    lane = Lane("w", TP, start)
    for change in changes:
        change(lane)
    assert lane.where is expected


def test_one_writer_at_a_time() -> None:
    """``start_storing`` refuses a second writer until the first one's write ended."""
    lane = Lane("w", TP)
    assert lane.start_storing()
    assert not lane.start_storing()
    lane.stored(parked=True)
    assert lane.start_storing()


@pytest.mark.parametrize(
    ("where", "ready", "checked", "idle"),
    [
        (Where.MEMORY, True, True, False),
        (Where.UNCHECKED, False, False, False),
        (Where.PARKED, False, True, False),
        (Where.STORING, False, True, False),
        (Where.STORING_UNCHECKED, False, False, False),
    ],
)
def test_only_a_lane_in_memory_sends(where: Where, ready: bool, checked: bool, idle: bool) -> None:
    """Parked, being written, or of unknown parked state: a lane sends nothing."""
    lane = Lane("w", TP, where)
    lane.push(Pending(DeliveryTask("w", Event("e1", "T", "t", 0, {})), TP, 1, OffsetTracker()))
    assert (lane.ready(now=0.0), lane.checked, lane.idle) == (ready, checked, idle)
