"""deliverer.partitions: commit positions cover only finished work; parked states per ownership."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.deliverer.partitions import OffsetTracker, ParkedStates


@pytest.mark.parametrize(
    ("added", "done", "expected"),
    [
        ([], [], None),
        ([5], [], None),  # nothing finished: no progress to commit
        ([5], [5], 6),
        ([5, 6, 7], [6, 7], None),  # the first is still running
        ([5, 6, 7], [5, 7], 6),
        ([5, 6, 7], [5, 6], 7),
        ([5, 6, 7], [7, 6, 5], 8),
        ([5, 9, 20], [5, 9], 20),  # gaps (compacted or skipped offsets) do not block
        ([5, 9, 20], [5, 9, 20], 21),
        ([5, 6], [5, 42], 6),  # unknown offsets are ignored
        ([5, 6], [5, 5], 6),  # repeated done is harmless
    ],
)
def test_committable_is_one_past_the_finished_prefix(
    added: list[int], done: list[int], expected: int | None
) -> None:
    """The position is one past the highest offset below which everything is done."""
    tracker = OffsetTracker()
    for offset in added:
        tracker.add(offset)
    for offset in done:
        tracker.done(offset)
    assert tracker.committable() == expected


def test_offsets_must_be_added_in_increasing_order() -> None:
    """Adding an offset at or below the last one is a bug in the caller, not silently accepted."""
    tracker = OffsetTracker()
    tracker.add(3)
    with pytest.raises(ValueError):
        tracker.add(3)


@given(
    st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_committable_never_passes_an_unfinished_offset(gaps: list[int], rnd) -> None:
    """Whatever the completion order, the position never skips unfinished work and ends past all."""
    offsets = []
    position = 0
    for gap in gaps:
        position += gap + 1
        offsets.append(position)
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.add(offset)
    order = offsets[:]
    rnd.shuffle(order)
    finished: set[int] = set()
    last = None
    for offset in order:
        tracker.done(offset)
        finished.add(offset)
        committable = tracker.committable()
        if committable is not None:
            assert all(o in finished for o in offsets if o < committable)
            assert last is None or committable >= last  # never moves backwards
            last = committable
    assert tracker.committable() == offsets[-1] + 1


P0 = TopicPartition("deliveries", 0)
P1 = TopicPartition("deliveries", 1)


@pytest.mark.parametrize(
    ("remembered", "forgotten", "asked", "expected"),
    [
        ([], [], (P0, "w"), None),  # never seen since the assignment: unknown
        ([(P0, "w", True)], [], (P0, "w"), True),
        ([(P0, "w", False)], [], (P0, "w"), False),
        ([(P0, "w", True), (P0, "w", False)], [], (P0, "w"), False),  # the latest wins
        ([(P0, "w", False)], [P0], (P0, "w"), None),  # revoked: may be stale now
        ([(P0, "w", False)], [P1], (P0, "w"), False),  # another partition moved
        ([(P1, "w", True)], [], (P0, "w"), None),  # known per partition only
    ],
)
def test_parked_states_are_known_only_while_the_partition_stays(
    remembered: list[tuple[TopicPartition, str, bool]],
    forgotten: list[TopicPartition],
    asked: tuple[TopicPartition, str],
    expected: bool | None,
) -> None:
    """A webhook's parked state is remembered per partition and forgotten with it."""
    states = ParkedStates()
    for partition, webhook_id, parked in remembered:
        states.remember(partition, webhook_id, parked)
    states.forget(forgotten)
    assert states.get(*asked) is expected
