"""Consumer lag: the high-water mark minus the committed offset, per partition.

``compute_lag`` is the pure part. ``OffsetReader`` asks the broker with an admin client
(committed offsets; the partitions are always named, which the embedded tansu needs)
and a group-less consumer (beginning and end offsets). ``LagPoller`` refreshes the
``hooklane_consumer_lag`` gauge every few seconds for the partitions a process
reports on: the router its whole group, a deliverer the partitions it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from dispatcher.kafka.connection import client_options
from dispatcher.ops.stall import Stall, StallWatch
from dispatcher.settings import Settings

log = structlog.get_logger(__name__)

POLL_INTERVAL_S = 5.0
# How long the broker's topic list is trusted (a new mirror topic shows up within this).
TOPICS_TTL_S = 60.0
REQUEST_TIMEOUT_S = 5.0

Partitions = Callable[[], Awaitable[Iterable[TopicPartition]]]


def compute_lag(
    committed: Mapping[TopicPartition, int],
    beginning: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Lag of every partition in ``end``.

    A partition without a commit (absent or -1) lags from its first retained offset,
    since the group's consumers start at the earliest one. Never negative: the end
    offset is read after the commit and may be stale by a moment.
    """
    lags = {}
    for tp, high in end.items():
        offset = committed.get(tp, -1)
        if offset < 0:
            offset = beginning.get(tp, 0)
        lags[tp] = max(0, high - offset)
    return lags


@dataclass(frozen=True, slots=True)
class LagSummary:
    """A group's lag at a glance: total, and the partition lagging most."""

    total: int
    worst: TopicPartition | None
    worst_lag: int


def summarize(lags: Mapping[TopicPartition, int]) -> LagSummary:
    """Total lag and the worst partition (ties: the first in topic, partition order)."""
    if not lags:
        return LagSummary(0, None, 0)
    worst = max(sorted(lags), key=lambda tp: lags[tp])
    return LagSummary(sum(lags.values()), worst, lags[worst])


class OffsetReader:
    """Reads committed and end offsets from the broker; ``start()`` then ``close()``."""

    def __init__(self, settings: Settings) -> None:
        self._admin = AIOKafkaAdminClient(
            **client_options(settings), request_timeout_ms=int(REQUEST_TIMEOUT_S * 1000)
        )
        self._consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
        self._layout: dict[str, list[int]] | None = None
        self._layout_until = 0.0

    async def start(self) -> None:
        """Connect both clients."""
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        """Disconnect both clients."""
        with contextlib.suppress(KafkaError):
            await self._consumer.stop()
        with contextlib.suppress(KafkaError):
            await self._admin.close()

    @property
    def admin(self) -> AIOKafkaAdminClient:
        """The admin client (``hooklane status`` describes groups with it)."""
        return self._admin

    async def partitions(self, topics: Callable[[str], bool]) -> set[TopicPartition]:
        """Every partition of the topics whose name ``topics`` accepts.

        The broker's topic list is asked again at most every ``TOPICS_TTL_S``: a full
        metadata answer (every topic, every partition) costs the caller and the broker
        more than the offsets themselves, and topics rarely come and go.
        """
        now = time.monotonic()
        if self._layout is None or now >= self._layout_until:
            # The metadata of every topic, kept here: the consumer's own cluster view
            # holds only the topics it tracks (on Apache Kafka, none).
            self._layout = {
                topic["topic"]: [p["partition"] for p in topic["partitions"]]
                for topic in await self._admin.describe_topics()
                if topic["error_code"] == 0
            }
            self._layout_until = now + TOPICS_TTL_S
        return {
            TopicPartition(name, partition)
            for name, partitions in self._layout.items()
            if topics(name)
            for partition in partitions
        }

    async def lag(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The lag of ``group`` on each of ``partitions``."""
        return (await self.offsets(group, partitions))[1]

    async def offsets(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(committed offsets, lag) of ``group`` on each of ``partitions``."""
        wanted = sorted(set(partitions))
        if not wanted:
            return {}, {}
        async with asyncio.timeout(REQUEST_TIMEOUT_S * 2):
            answer = await self._admin.list_consumer_group_offsets(group, partitions=wanted)
            beginning = await self._consumer.beginning_offsets(wanted)
            end = await self._consumer.end_offsets(wanted)
        committed = {tp: meta.offset for tp, meta in answer.items()}
        return committed, compute_lag(committed, beginning, end)


class LagPoller:
    """Keeps ``hooklane_consumer_lag{group,topic,partition}`` fresh for ``partitions()``,
    and logs ``consumer.stalled`` when a lagging partition's commit stops moving."""

    def __init__(
        self,
        reader: OffsetReader,
        gauge: Gauge,
        group: str,
        partitions: Partitions,
        interval_s: float = POLL_INTERVAL_S,
        watch: StallWatch | None = None,
    ) -> None:
        self._reader = reader
        self._gauge = gauge
        self._group = group
        self._partitions = partitions
        self._interval_s = interval_s
        self._exported: set[TopicPartition] = set()
        self._watch = StallWatch() if watch is None else watch

    async def refresh(self) -> dict[TopicPartition, int]:
        """Read the lag once and export it; partitions no longer reported are removed."""
        committed, lags = await self._reader.offsets(self._group, await self._partitions())
        self._report(*self._watch.observe(committed, lags))
        for tp, lag in lags.items():
            self._gauge.labels(self._group, tp.topic, str(tp.partition)).set(lag)
        for tp in self._exported - set(lags):
            with contextlib.suppress(KeyError):
                self._gauge.remove(self._group, tp.topic, str(tp.partition))
        self._exported = set(lags)
        return lags

    def _report(self, stalled: list[Stall], resumed: list[TopicPartition]) -> None:
        for stall in stalled:
            log.warning(
                "consumer.stalled",
                group=self._group,
                topic=stall.partition.topic,
                partition=stall.partition.partition,
                lag=stall.lag,
                seconds=stall.seconds,
                hint="records wait but the group's commit has not moved: check the broker"
                " answers fetches within HOOKLANE_FETCH_MAX_WAIT_MS, and this process's log",
            )
        for tp in resumed:
            log.info("consumer.resumed", group=self._group, topic=tp.topic, partition=tp.partition)

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled; broker trouble is logged, not fatal."""
        while True:
            try:
                await self.refresh()
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("lag.refresh_failed", group=self._group, error=repr(exc))
            await asyncio.sleep(self._interval_s)
