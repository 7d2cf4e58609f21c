"""Noticing a consumer that has stopped moving while records wait for it.

A consumer whose fetches come back empty (a broker that answers no fetch within the
wait it was given: the embedded tansu once a partition holds tens of thousands of
records in memory), or whose handler is wedged, shows nothing in its own log: it polls,
gets nothing, polls again. The lag gauge grows, but only for those who look.
``StallWatch`` turns that into one warning per episode: a partition that lags while its
committed offset has not moved for ``after_s`` is *stalled*; it *resumes* when the
commit moves again (or nothing waits any more).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiokafka import TopicPartition

STALLED_AFTER_S = 120.0


@dataclass(frozen=True, slots=True)
class Stall:
    """A partition that stalled: its lag and for how long its commit has not moved."""

    partition: TopicPartition
    lag: int
    seconds: float


@dataclass(slots=True)
class StallWatch:
    """Feed it each lag reading; it says which partitions stalled or resumed since."""

    after_s: float = STALLED_AFTER_S
    clock: Callable[[], float] = time.monotonic
    _since: dict[TopicPartition, tuple[int, float]] = field(default_factory=dict)
    _stalled: set[TopicPartition] = field(default_factory=set)

    def observe(
        self, committed: Mapping[TopicPartition, int], lags: Mapping[TopicPartition, int]
    ) -> tuple[list[Stall], list[TopicPartition]]:
        """(newly stalled, resumed) after one reading of ``committed`` offsets and lags."""
        now = self.clock()
        stalled: list[Stall] = []
        resumed: list[TopicPartition] = []
        for tp in sorted(lags):
            offset = committed.get(tp, -1)
            seen = self._since.get(tp)
            if seen is None or seen[0] != offset or lags[tp] == 0:
                self._since[tp] = (offset, now)
                if tp in self._stalled:
                    self._stalled.discard(tp)
                    resumed.append(tp)
                continue
            if tp not in self._stalled and now - seen[1] >= self.after_s:
                self._stalled.add(tp)
                stalled.append(Stall(tp, lags[tp], round(now - seen[1], 1)))
        for tp in set(self._since) - set(lags):  # no longer reported: forget it
            del self._since[tp]
            self._stalled.discard(tp)
        return stalled, resumed
