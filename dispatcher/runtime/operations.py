"""The operations side of a process: ops server, readiness checks and monitors.

``ProcessOps`` owns what every process adds beside its work: the ``/metrics``,
``/healthz``, ``/readyz`` server, the event-loop lag monitor and any background
poller (consumer lag, backlog gauges, lane sampling). ``run_router`` and
``run_deliverer`` wrap the engine's services with it: the services count what they
decide (routed, dead-lettered, deliveries by outcome, commits, attempt-log rows) on
the metrics object handed to their constructor; the pollers read their public
attributes (``assignment``, ``Worker.lane_counts()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any

import asyncpg
import structlog
from aiokafka import TopicPartition

from dispatcher.kafka.connection import wait_until_accepted
from dispatcher.ops.lag import LagPoller, OffsetReader
from dispatcher.ops.lane_gauges import LaneCounts, owned_parked, sample_lanes
from dispatcher.ops.loop_lag import monitor_loop_lag
from dispatcher.ops.metrics import (
    TOP_WEBHOOKS,
    DelivererMetrics,
    Families,
    Role,
    RouterMetrics,
    build_registry,
)
from dispatcher.ops.ops_server import OpsServer
from dispatcher.ops.readiness import BrokerCheck, Check, group_member_check, postgres_check
from dispatcher.runtime.backlog_gauges import (
    refresh_periodically,
    set_backlog_gauges,
    set_webhook_gauges,
)
from dispatcher.runtime.signals import run_until_signalled, stop_signals
from dispatcher.settings import Settings
from dispatcher.store import backlog as backlog_store
from dispatcher.store import db

log = structlog.get_logger(__name__)


class ProcessOps:
    """``async with ProcessOps(settings, role) as ops``: serve ops endpoints meanwhile."""

    def __init__(self, settings: Settings, role: Role) -> None:
        self.settings = settings
        self.families: Families = build_registry(
            (role,),
            delivery_timeout_s=settings.delivery_timeout_s,
            webhook_labels=settings.metrics_webhook_labels,
        )
        self.checks: dict[str, Check] = {}
        self.server = OpsServer(
            settings.metrics_host, settings.metrics_port, self.families.registry, self.checks
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: asyncpg.Pool | None = None
        self._broker: BrokerCheck | None = None
        self._reader: OffsetReader | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def __aenter__(self) -> ProcessOps:
        try:
            await self.server.start()
        except OSError as exc:
            # Delivery matters more than its metrics: keep working, loudly. Probes on the
            # port fail, so an orchestrator still notices.
            log.error(
                "ops.unavailable",
                url=self.server.url,
                error=str(exc),
                hint="HOOKLANE_METRICS_PORT is taken; /metrics, /healthz and /readyz are off",
            )
        self.spawn(monitor_loop_lag(self.families.gauge("event_loop_lag_seconds")))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.close()
        for close in self._closers:
            await close()
        if self._reader is not None:
            await self._reader.close()
        if self._broker is not None:
            await self._broker.close()
        if self._pool is not None:
            await self._pool.close()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a monitor until the process ends; one that crashes says so in the log."""
        name = getattr(coroutine, "__qualname__", "monitor")
        task = asyncio.create_task(coroutine, name=f"ops-{name}")
        task.add_done_callback(_report_crash)
        self._tasks.append(task)

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Await ``close()`` when the process ends."""
        self._closers.append(close)

    async def pool(self) -> asyncpg.Pool:
        """A one-connection pool of our own, created without connecting.

        Readiness then reports a database that is down at start, instead of the
        process failing before it can say why.
        """
        if self._pool is None:
            self._pool = await db.create_pool(self.settings.database_url, min_size=0, max_size=1)
        return self._pool

    async def add_infrastructure_checks(self, pool: asyncpg.Pool | None = None) -> None:
        """The ``postgres`` (on ``pool``, default our own) and ``kafka`` readiness checks
        (DESIGN §5 and §10 name them)."""
        self.checks["postgres"] = postgres_check(pool or await self.pool())
        if self.settings.kafka_bootstrap_servers:
            self._broker = BrokerCheck(self.settings)
            self.checks["kafka"] = self._broker

    async def offset_reader(self) -> OffsetReader:
        """A started ``OffsetReader`` on the configured broker."""
        if self._reader is None:
            self._reader = OffsetReader(self.settings)
            await self._reader.start()
        return self._reader


def _report_crash(task: asyncio.Task[None]) -> None:
    # A monitor ending early leaves its gauges stale but must not stop delivery.
    if not task.cancelled() and task.exception() is not None:
        log.error("ops.monitor_failed", task=task.get_name(), error=repr(task.exception()))


async def run_router(settings: Settings) -> None:
    """``hooklane router``: route until SIGINT/SIGTERM, observable on the metrics port."""
    from dispatcher.router.router import mirror_pattern

    mirror = re.compile(mirror_pattern(settings.topic_prefix))
    with stop_signals() as stopping:
        await _run_router(settings, mirror, stopping)


async def _run_router(settings: Settings, mirror: re.Pattern[str], stopping: asyncio.Event) -> None:
    from dispatcher.router.router import GROUP_ID, Router

    async with ProcessOps(settings, "router") as ops:
        await ops.add_infrastructure_checks()
        if not await wait_until_accepted(settings, stopping):
            return
        reader = await ops.offset_reader()

        async def partitions() -> Iterable[TopicPartition]:
            # The router reports on its whole group: every mirror topic's partitions.
            return await reader.partitions(lambda name: mirror.fullmatch(name) is not None)

        gauge = ops.families.gauge("consumer_lag")
        ops.spawn(LagPoller(reader, gauge, GROUP_ID, partitions).run())
        router = Router(settings, metrics=RouterMetrics(ops.families, GROUP_ID))
        ops.checks["consumer_group"] = group_member_check(GROUP_ID, lambda: router.assignment)
        await run_until_signalled(router, stopping)


async def run_deliverer(settings: Settings) -> None:
    """``hooklane deliverer``: deliver until SIGINT/SIGTERM, observable on the metrics port."""
    with stop_signals() as stopping:
        await _run_deliverer(settings, stopping)


async def _run_deliverer(settings: Settings, stopping: asyncio.Event) -> None:
    from dispatcher.deliverer import GROUP_ID, Deliverer

    async with ProcessOps(settings, "deliverer") as ops:
        metrics = DelivererMetrics(ops.families, GROUP_ID)
        # The deliverer makes (make_sender: the lean sender by default) and closes it.
        deliverer = Deliverer(settings, metrics=metrics)
        await ops.add_infrastructure_checks()
        ops.checks["consumer_group"] = group_member_check(GROUP_ID, lambda: deliverer.assignment)
        if not await wait_until_accepted(settings, stopping):
            return
        reader = await ops.offset_reader()

        async def owned() -> Iterable[TopicPartition]:
            return deliverer.assignment

        families = ops.families
        ops.spawn(LagPoller(reader, families.gauge("consumer_lag"), GROUP_ID, owned).run())
        pool = await ops.pool()
        backlog = families.gauge("backlog_deliveries"), families.gauge("backlog_oldest_age_seconds")
        ops.spawn(refresh_periodically(lambda: set_backlog_gauges(pool, *backlog), "backlog"))
        if settings.metrics_webhook_labels:
            per_webhook = (
                families.gauge("webhook_backlog_deliveries"),
                families.gauge("webhook_consecutive_failures"),
            )

            async def webhook_gauges() -> None:
                await set_webhook_gauges(pool, *per_webhook, TOP_WEBHOOKS)

            ops.spawn(refresh_periodically(webhook_gauges, "webhooks"))

        async def count_parked() -> None:
            topic = settings.deliveries_topic
            partitions = len(await reader.partitions(lambda name: name == topic))
            mine = {tp.partition for tp in deliverer.assignment if tp.topic == topic}
            parked = owned_parked(await backlog_store.parked_webhook_ids(pool), mine, partitions)
            metrics.lanes_parked.set(parked)

        ops.spawn(refresh_periodically(count_parked, "lanes_parked"))

        def lane_counts() -> LaneCounts:
            worker = deliverer.worker
            return worker.lane_counts() if worker is not None else LaneCounts()

        ops.spawn(sample_lanes(lane_counts, metrics))
        await run_until_signalled(deliverer, stopping)
