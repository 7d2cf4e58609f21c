"""The read-only SQL behind the backlog gauges and ``hooklane status``.

Kept in one module so it can move under ``dispatcher/store/`` as a whole; every query
is an aggregate or bounded (LIMIT), cheap enough to run every few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Gauge

if TYPE_CHECKING:
    from dispatcher.db import Executor

log = structlog.get_logger(__name__)

BACKLOG_INTERVAL_S = 5.0
FAILING_LIMIT = 10


@dataclass(frozen=True, slots=True)
class BacklogStats:
    """The Postgres backlog: parked webhooks, deliveries waiting, oldest entry's age."""

    parked_webhooks: int
    deliveries: int
    oldest_age_s: float  # 0 when empty


@dataclass(frozen=True, slots=True)
class FailingWebhook:
    """A webhook failing now, from its health columns."""

    id: str
    tenant_id: str
    url: str
    state: str
    failing_since: datetime
    consecutive_failures: int


async def backlog_stats(db: Executor) -> BacklogStats:
    """Size and age of the backlog, and how many webhooks are parked."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM parked_webhooks) AS parked,"
        " count(*) AS deliveries,"
        " COALESCE(EXTRACT(EPOCH FROM now() - min(enqueued_at)), 0)::float8 AS oldest"
        " FROM backlog"
    )
    assert row is not None  # an aggregate always answers one row
    return BacklogStats(row["parked"], row["deliveries"], max(0.0, row["oldest"]))


async def parked_webhook_ids(db: Executor) -> list[str]:
    """Every parked webhook's id."""
    return [row[0] for row in await db.fetch("SELECT webhook_id::text FROM parked_webhooks")]


async def failing_webhooks(db: Executor, limit: int = FAILING_LIMIT) -> list[FailingWebhook]:
    """The webhooks failing longest, oldest ``failing_since`` first."""
    rows = await db.fetch(
        "SELECT id::text, tenant_id, url, state, failing_since, consecutive_failures"
        " FROM webhooks WHERE failing_since IS NOT NULL"
        " ORDER BY failing_since, id LIMIT $1",
        limit,
    )
    return [FailingWebhook(*row.values()) for row in rows]


async def largest_backlogs(db: Executor, limit: int) -> list[tuple[str, int]]:
    """(webhook id, deliveries) of the ``limit`` parked webhooks with the most, most first."""
    rows = await db.fetch(
        "SELECT webhook_id::text, count(*) AS n FROM backlog"
        " GROUP BY webhook_id ORDER BY n DESC, webhook_id LIMIT $1",
        limit,
    )
    return [(row[0], row[1]) for row in rows]


async def recent_outcomes(db: Executor, within_s: float = 60.0) -> dict[str, int]:
    """Attempts of the last ``within_s`` seconds by outcome (test triggers excluded)."""
    rows = await db.fetch(
        "SELECT outcome, count(*) AS n FROM attempts"
        " WHERE attempted_at > now() - make_interval(secs => $1) AND NOT test"
        " GROUP BY outcome ORDER BY outcome",
        within_s,
    )
    return {row["outcome"]: row["n"] for row in rows}


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
    largest = await largest_backlogs(db, top)
    failing = await failing_webhooks(db, top)
    set_top(backlog, largest)
    set_top(failures, [(webhook.id, webhook.consecutive_failures) for webhook in failing])


async def set_backlog_gauges(db: Executor, deliveries: Gauge, oldest_age: Gauge) -> None:
    """Set the two global backlog gauges from Postgres once."""
    stats = await backlog_stats(db)
    deliveries.set(stats.deliveries)
    oldest_age.set(stats.oldest_age_s)
