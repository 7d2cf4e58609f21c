"""Refreshing the backlog gauges from Postgres (the SQL is in ``dispatcher.store.backlog``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Gauge

from dispatcher.store import backlog as backlog_store
from dispatcher.store.webhook_store import failing_webhooks

if TYPE_CHECKING:
    from dispatcher.store.db import Executor

log = structlog.get_logger(__name__)

BACKLOG_INTERVAL_S = 5.0


async def refresh_periodically(
    refresh: Callable[[], Awaitable[None]], what: str, interval_s: float = BACKLOG_INTERVAL_S
) -> None:
    """Await ``refresh()`` every ``interval_s`` until cancelled; failures are logged.

    A gauge whose refresh fails just goes stale: the database being down is what
    ``/readyz`` reports, not a reason to stop the process.
    """
    while True:
        try:
            await refresh()
        except Exception as exc:  # asyncpg, OSError, KafkaError, timeouts
            log.warning("gauges.refresh_failed", gauges=what, error=repr(exc))
        await asyncio.sleep(interval_s)


def set_top(gauge: Gauge, values: Iterable[tuple[str, float]]) -> None:
    """Make ``gauge{webhook_id}`` exactly ``values``: webhooks that left the top are cleared.

    Clear and set run without an await between them, so a scrape (same event loop)
    never sees a half-updated set.
    """
    gauge.clear()
    for webhook_id, value in values:
        gauge.labels(webhook_id=webhook_id).set(value)


async def set_webhook_gauges(db: Executor, backlog: Gauge, failures: Gauge, top: int) -> None:
    """The opt-in per-webhook gauges: the ``top`` largest backlogs, the ``top`` failing longest."""
    largest = await backlog_store.largest_backlogs(db, top)
    failing = await failing_webhooks(db, top)
    set_top(backlog, largest)
    set_top(failures, [(webhook.id, webhook.consecutive_failures) for webhook in failing])


async def set_backlog_gauges(db: Executor, deliveries: Gauge, oldest_age: Gauge) -> None:
    """Set the two global backlog gauges from Postgres once."""
    stats = await backlog_store.backlog_stats(db)
    deliveries.set(stats.deliveries)
    oldest_age.set(stats.oldest_age_s)
