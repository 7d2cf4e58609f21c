"""One LISTEN connection per process (dispatcher.store.notifications), against real Postgres."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import asyncpg
import pytest

from dispatcher.settings import Settings
from dispatcher.store.notifications import Notifications, backoff_delays
from dispatcher.store.webhook_changes import CHANNEL, WebhookChanges
from tests.support.pipeline import start_deliverer, wait_until


@pytest.mark.parametrize(
    ("first", "cap", "expected"),
    [
        (0.5, 30.0, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),
        (1.0, 1.0, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        (0.1, 0.3, [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]),
    ],
)
def test_backoff_doubles_up_to_the_cap(first: float, cap: float, expected: list[float]) -> None:
    """Reconnect waits double from the first delay and stay at the cap."""
    assert list(itertools.islice(backoff_delays(first, cap), 8)) == pytest.approx(expected)


async def listen_connections(pool: Any, application_name: str | None = None) -> list[int]:
    """Pids of this database's connections whose last statement was a LISTEN."""
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'LISTEN %' AND ($1::text IS NULL OR application_name = $1)",
        application_name,
    )
    return [row["pid"] for row in rows]


async def notify(pool: Any, channel: str, payload: str) -> None:
    await pool.execute("SELECT pg_notify($1, $2)", channel, payload)


async def test_two_subscribers_share_one_connection_and_resync_after_it_is_killed(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """Both subscribers hear their channels over one connection, and again after a kill."""
    name = f"hooklane-test-{uuid.uuid4().hex[:8]}"
    notifications = Notifications(database_url, application_name=name)
    await notifications.start()
    scheduler_heard: list[tuple[str, str]] = []
    connects = []
    changes: list[str] = []
    resyncs = []

    async def on_change(webhook_id: str) -> None:
        changes.append(webhook_id)

    async def on_resync() -> None:
        resyncs.append(1)

    webhook_changes = WebhookChanges(notifications, on_change, on_resync)
    try:
        await notifications.subscribe(
            ["hooklane_parked", CHANNEL],
            lambda channel, payload: scheduler_heard.append((channel, payload)),
            lambda: connects.append(1),
        )
        await webhook_changes.start()
        assert connects == [1] and resyncs == [1]  # subscribing to a live connection
        assert len(await listen_connections(pool, name)) == 1

        await notify(pool, "hooklane_parked", "p1")
        await notify(pool, CHANNEL, "w1")
        await wait_until(lambda: changes == ["w1"] and len(scheduler_heard) == 2)
        assert scheduler_heard == [("hooklane_parked", "p1"), (CHANNEL, "w1")]

        [pid] = await listen_connections(pool, name)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        # Both are told it is back (to resync what they missed), over a new connection.
        await wait_until(lambda: len(connects) == 2 and len(resyncs) == 2)
        [new_pid] = await wait_until(lambda: listen_connections(pool, name))
        assert new_pid != pid and notifications.connects == 2

        await notify(pool, CHANNEL, "w2")
        await wait_until(lambda: changes == ["w1", "w2"])
        assert scheduler_heard[-1] == (CHANNEL, "w2")
    finally:
        await webhook_changes.stop()
        await notifications.stop()
    assert await listen_connections(pool, name) == []


async def test_unsubscribed_callbacks_hear_nothing(database_url: str, pool: asyncpg.Pool) -> None:
    """After unsubscribe a subscriber gets nothing; the other one still does."""
    notifications = Notifications(database_url, application_name="hooklane-test-unsub")
    await notifications.start()
    first: list[str] = []
    second: list[str] = []
    try:
        one = await notifications.subscribe([CHANNEL], lambda _c, p: first.append(p))
        await notifications.subscribe([CHANNEL], lambda _c, p: second.append(p))
        await notifications.unsubscribe(one)
        await notify(pool, CHANNEL, "after")
        await wait_until(lambda: second == ["after"])
        assert first == []
    finally:
        await notifications.stop()


async def test_a_deliverer_holds_one_listen_connection(
    internal_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A running deliverer (scheduler + target cache) listens on exactly one connection."""
    before = set(await listen_connections(pool))
    running = await start_deliverer(internal_topics)
    try:
        # Assigned means run() started the scheduler: before this change it opened a
        # second LISTEN connection of its own by now.
        listening = set(await wait_until(lambda: listen_connections(pool))) - before
        assert len(listening) == 1
    finally:
        await running.stop()
