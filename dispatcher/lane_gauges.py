"""The ``lanes`` gauge, sampled: the worker's lanes by state, once a second.

Sampling the worker's lanes costs nothing per delivery; an exact gauge would need an
update on every state change inside the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from dispatcher.metrics import DelivererMetrics

SAMPLE_INTERVAL_S = 1.0


class LaneView(Protocol):
    """What the sampler reads of a lane (``dispatcher.deliverer.lane.Lane``)."""

    parked: bool
    in_flight: int
    next_attempt_at: float

    @property
    def failing(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class LaneCounts:
    """Lanes by state, and the requests in flight across them."""

    ready: int = 0
    backoff: int = 0
    parked: int = 0
    in_flight: int = 0


def count_lanes(lanes: Iterable[LaneView], now: float) -> LaneCounts:
    """Parked lanes wait on the backlog; failing ones before their next attempt back off."""
    ready = backoff = parked = in_flight = 0
    for lane in lanes:
        in_flight += lane.in_flight
        if lane.parked:
            parked += 1
        elif lane.failing and lane.next_attempt_at > now:
            backoff += 1
        else:
            ready += 1
    return LaneCounts(ready, backoff, parked, in_flight)


async def sample_lanes(
    lanes: Callable[[], Iterable[LaneView]],
    metrics: DelivererMetrics,
    clock: Callable[[], float] = time.time,
    interval_s: float = SAMPLE_INTERVAL_S,
) -> None:
    """Set the ``lanes`` gauge every ``interval_s`` (in-flight is the sender's, exact)."""
    while True:
        counts = count_lanes(list(lanes()), clock())
        metrics.lanes_ready.set(counts.ready)
        metrics.lanes_backoff.set(counts.backoff)
        metrics.lanes_parked.set(counts.parked)
        await asyncio.sleep(interval_s)
