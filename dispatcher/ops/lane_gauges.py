"""The ``lanes`` gauge, sampled: this deliverer's lanes by state.

Ready and backing-off lanes are sampled from the worker (``Worker.lane_counts()``)
once a second, which costs nothing per delivery. Parked lanes leave the worker's
memory (their state is the ``parked_webhooks`` table), so they are counted from
Postgres: the parked webhooks whose deliveries-topic partition (the producer's
murmur2 of the webhook id) this process owns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from aiokafka.partitioner import murmur2

from dispatcher.ops.metrics import DelivererMetrics

SAMPLE_INTERVAL_S = 1.0


class LaneView(Protocol):
    """What the sampler reads of a lane (``dispatcher.deliverer.lane.Lane``)."""

    next_attempt_at: float

    @property
    def parked(self) -> bool: ...

    @property
    def failing(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class LaneCounts:
    """In-memory lanes by state (parked ones are counted from Postgres)."""

    ready: int = 0
    backoff: int = 0


def count_lanes(lanes: Iterable[LaneView], now: float) -> LaneCounts:
    """Failing lanes before their next attempt back off; parked ones count in neither."""
    ready = backoff = 0
    for lane in lanes:
        if lane.parked:
            continue
        if lane.failing and lane.next_attempt_at > now:
            backoff += 1
        else:
            ready += 1
    return LaneCounts(ready, backoff)


def partition_of(webhook_id: str, partitions: int) -> int:
    """The deliveries partition of ``webhook_id`` (Kafka's default partitioner)."""
    hashed: int = murmur2(webhook_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def owned_parked(parked_ids: Iterable[str], owned: Collection[int], partitions: int) -> int:
    """How many of ``parked_ids`` fall in the ``owned`` partitions."""
    if not partitions:
        return 0
    return sum(1 for webhook_id in parked_ids if partition_of(webhook_id, partitions) in owned)


async def sample_lanes(
    lane_counts: Callable[[], LaneCounts],
    metrics: DelivererMetrics,
    interval_s: float = SAMPLE_INTERVAL_S,
) -> None:
    """Set ``lanes{state=ready|backoff}`` every ``interval_s`` (in-flight is the sender's)."""
    while True:
        counts = lane_counts()
        metrics.lanes_ready.set(counts.ready)
        metrics.lanes_backoff.set(counts.backoff)
        await asyncio.sleep(interval_s)
