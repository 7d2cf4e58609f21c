"""The broker's own latency floor for a P3 shape: the pipeline's Kafka path, doing no work.

(3) and (6) measure publish → receive through the whole pipeline. Part of that time is
the broker's: two hops (mirror topic → router, deliveries topic → deliverer), each a
fetch the broker answers in its own time, while it carries the load of the scenario.
``broker_floor`` measures that part alone, on a fresh broker of the same kind with the
same topics, fetch wait, publisher and record batches, so the figures say how far a
target is from what this broker allows at all:

- the bench's own publisher (``paced_publish``: the same rate, pacing and batches);
- a *null router*: a consumer of every mirror topic by pattern, like the router's,
  that forwards each event as is to ``fanout`` keys on the deliveries topic with the
  router's own ``Producer.send_keyed`` (one batch per partition per poll), awaiting
  the acknowledgements before its next poll, and committing every 0.5 s;
- a *null deliverer*: a consumer of the deliveries topic; a delivery is *received*
  when its record is in that consumer's hands (no lane, no signing, no HTTP).

No Postgres, no HTTP, and both consumers run in this process. What remains is the
broker's fetch and produce path, plus an asyncio consumer loop at each hop: a lower
bound for any router and deliverer on this broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from dispatcher.bench.receiver import number_after
from dispatcher.bench.stack import BENCH_TOPIC
from dispatcher.bench.stats import summarize
from dispatcher.bench.workload import event_data, paced_publish
from dispatcher.kafka.connection import client_options
from dispatcher.kafka.group_consumer import COMMIT_INTERVAL_S
from dispatcher.router.router import MAX_BATCH, POLL_TIMEOUT_MS, mirror_pattern
from dispatcher.settings import Settings

# The router's own poll settings, and the pipeline's commit pace for both groups.
ROUTER_POLL_MS = POLL_TIMEOUT_MS
ROUTER_MAX_RECORDS = MAX_BATCH
DELIVERER_MAX_RECORDS = 2000
COMMIT_EVERY_S = COMMIT_INTERVAL_S
READY_TIMEOUT_S = 30.0


def tenant_ids(webhooks: int, fanout: int) -> list[str]:
    """Tenants as the scenario has them: ``fanout`` webhooks each, ``webhooks`` in all."""
    return [f"ten_floor_{index:05d}" for index in range(max(1, webhooks // fanout))]


def fanout_keys(tenant_id: str, fanout: int) -> list[bytes]:
    """The deliveries-topic keys of one event: one per webhook of its tenant."""
    return [f"{tenant_id}/{index}".encode() for index in range(fanout)]


def tenant_of(event: bytes) -> str | None:
    """The ``tenant_id`` string of an event message, without a full JSON parse."""
    marker = b'"tenant_id":"'
    start = event.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = event.find(b'"', start)
    return event[start:end].decode() if end > start else None


@dataclass
class FloorResult:
    """What the null pipeline measured: latencies (s) and the broker's CPU share."""

    latencies: list[float]
    expected: int
    broker_core_share: float

    def metrics(self) -> dict[str, Any]:
        """The scenario metrics ``broker_floor_*`` (ms)."""
        summary = summarize(self.latencies, scale=1000.0)
        return {
            "broker_floor_p50_ms": summary["p50"],
            "broker_floor_p99_ms": summary["p99"],
            "broker_floor_max_ms": summary["max"],
            "broker_floor_missing": self.expected - len(self.latencies),
            "broker_floor_broker_core_share": round(self.broker_core_share, 3),
        }


class NullPipeline:
    """The null router and null deliverer of ``settings``' topics (see the module)."""

    def __init__(self, settings: Settings, fanout: int) -> None:
        self.settings = settings
        self.fanout = fanout
        self.latencies: list[float] = []
        self.arrived = asyncio.Event()
        self.wanted = 0
        self._routes = self._consumer("router", ROUTER_MAX_RECORDS, metadata_max_age_ms=1000)
        self._pattern = mirror_pattern(settings.topic_prefix)
        self._deliveries = self._consumer(
            "deliverer", DELIVERER_MAX_RECORDS, topics=(settings.deliveries_topic,)
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _consumer(
        self, role: str, max_records: int, topics: tuple[str, ...] = (), **options: Any
    ) -> AIOKafkaConsumer:
        """A consumer of group ``<prefix>floor-<role>`` with the pipeline's fetch wait."""
        settings = self.settings
        return AIOKafkaConsumer(
            *topics,
            **client_options(settings),
            group_id=f"{settings.topic_prefix}floor-{role}",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_poll_records=max_records,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **options,
        )

    async def start(self) -> None:
        """Join both groups and start the loops."""
        self._routes.subscribe(pattern=self._pattern)
        await self._routes.start()
        await self._deliveries.start()
        self._tasks = [
            asyncio.create_task(self._route_forever()),
            asyncio.create_task(self._receive_forever()),
        ]

    async def stop(self) -> None:
        """Stop the loops and both consumers."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._routes.stop()
        await self._deliveries.stop()

    def expect(self, count: int) -> None:
        """Set ``arrived`` once ``count`` deliveries have been received in all."""
        self.wanted = count
        if len(self.latencies) >= count:
            self.arrived.set()

    async def _route_forever(self) -> None:
        from dispatcher.kafka.producer import Producer

        async with Producer(self.settings) as producer:
            committed = time.monotonic()
            while True:
                batch = await self._routes.getmany(
                    timeout_ms=ROUTER_POLL_MS, max_records=ROUTER_MAX_RECORDS
                )
                tasks: list[tuple[bytes, bytes]] = []
                for records in batch.values():
                    for record in records:
                        keys = fanout_keys(tenant_of(record.value) or "?", self.fanout)
                        tasks.extend((key, record.value) for key in keys)
                futures = await producer.send_keyed(self.settings.deliveries_topic, tasks)
                if futures:
                    await asyncio.gather(*futures)
                committed = await _commit_now_and_then(self._routes, committed)

    async def _receive_forever(self) -> None:
        committed = time.monotonic()
        while True:
            batch = await self._deliveries.getmany(
                timeout_ms=ROUTER_POLL_MS, max_records=DELIVERER_MAX_RECORDS
            )
            now = time.time()
            for records in batch.values():
                for record in records:
                    sent_at = number_after(record.value, b"sent_at")
                    if sent_at is not None:
                        self.latencies.append(now - sent_at)
            if self.wanted and len(self.latencies) >= self.wanted:
                self.arrived.set()
            committed = await _commit_now_and_then(self._deliveries, committed)


async def _commit_now_and_then(consumer: AIOKafkaConsumer, last: float) -> float:
    if time.monotonic() - last < COMMIT_EVERY_S:
        return last
    await consumer.commit()
    return time.monotonic()


async def warm_up(pipeline: NullPipeline, settings: Settings, tenants: Sequence[str]) -> None:
    """One event through the null pipeline (both groups joined and reading); then forget it."""
    from dispatcher.kafka.producer import Producer

    deadline = time.monotonic() + READY_TIMEOUT_S
    async with Producer(settings) as producer:
        await producer.publish(BENCH_TOPIC, event_data(0, ""), tenant_id=tenants[0])
    while len(pipeline.latencies) < pipeline.fanout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the null pipeline did not deliver within {READY_TIMEOUT_S}s")
        await asyncio.sleep(0.05)
    pipeline.latencies.clear()


async def broker_floor(
    settings: Settings,
    broker_cpu: Any,
    rate_per_s: float,
    duration_s: float,
    webhooks: int,
    fanout: int,
    wait_s: float,
) -> FloorResult:
    """The null pipeline's publish → receive latencies for one P3 shape on ``settings``'
    (fresh) broker; ``broker_cpu()`` is that broker's CPU seconds so far."""
    tenants = tenant_ids(webhooks, fanout)
    pipeline = NullPipeline(settings, fanout)
    await pipeline.start()
    try:
        await warm_up(pipeline, settings, tenants)
        cpu0, started = broker_cpu(), time.monotonic()
        published, _ = await paced_publish(settings, tenants, rate_per_s, duration_s, "floor")
        expected = published * fanout
        pipeline.expect(expected)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pipeline.arrived.wait(), wait_s)
        share = (broker_cpu() - cpu0) / (time.monotonic() - started)
    finally:
        await pipeline.stop()
    return FloorResult(list(pipeline.latencies), expected, share)
