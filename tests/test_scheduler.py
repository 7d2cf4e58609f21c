"""The backlog scheduler against real Postgres and loopback receivers that fail on purpose.

Short test schedule: short retries 0.05-0.5 s, park after 1 s, long retries every 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Mapping, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from dispatcher.deliverer.attempt_log import AttemptLog
from dispatcher.deliverer.scheduler import BacklogScheduler
from dispatcher.delivery.failures import BlockedDestination
from dispatcher.delivery.http.sender import AiohttpSender, Response
from dispatcher.settings import Settings
from dispatcher.store import backlog
from dispatcher.store.notifications import Notifications
from dispatcher.store.webhook_store import update_webhook
from dispatcher.store.webhook_targets import load_target
from tests.support.failure import (
    BOX,
    clean_backlog,
    make_result,
    make_task,
    make_webhook,
    ok_numbers,
)
from tests.support.pipeline import busiest_second, wait_until
from tests.support.receiver import Receiver, failing, numbered

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)


@pytest.fixture
def short(settings: Settings) -> Settings:
    return settings.replace(
        retry_schedule=(0.05, 0.1, 0.2, 0.5, 1.0, 1.0), park_after=1.0, retry_window=6.0
    )


def sleeps(logs: list[MutableMapping[str, Any]]) -> int:
    """How many passes the scheduler made (each ends in one ``scheduler.sleeping``)."""
    return sum(1 for entry in logs if entry["event"] == "scheduler.sleeping")


@contextlib.asynccontextmanager
async def running_scheduler(
    settings: Settings, pool: Any, sender: Any = None, announcer: Any = None, metrics: Any = None
) -> AsyncIterator[BacklogScheduler]:
    """A scheduler (with its own attempt log and sender) running as a task."""
    own_sender = sender is None
    sender = sender or AiohttpSender(settings)
    log = AttemptLog(pool, flush_interval=0.05)
    log.start()
    notifications = Notifications(settings.database_url)
    await notifications.start()
    scheduler = BacklogScheduler(
        settings,
        pool,
        sender,
        functools.partial(load_target, pool, BOX),
        log,
        notifications,
        announcer=announcer,
        metrics=metrics,
    )
    task = asyncio.create_task(scheduler.run())
    try:
        yield scheduler
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 15)
        await notifications.stop()
        await log.close()
        if own_sender:
            await sender.close()


async def park_tasks(
    pool: Any, webhook_id: str, tenant_id: str, count: int, due_in: float = 0.0
) -> list[str]:
    tasks = [make_task(webhook_id, tenant_id, n) for n in range(count)]
    now = time.time()
    await backlog.park(pool, webhook_id, tasks, now, 6, now + due_in)
    return [t.event.id for t in tasks]


async def webhook_row(pool: Any, webhook_id: str) -> Any:
    return await pool.fetchrow(
        "SELECT state, disabled_reason, consecutive_failures FROM webhooks WHERE id = $1",
        webhook_id,
    )


async def test_flaky_endpoint_gets_everything_in_order(short, pool, tenant) -> None:
    """While failing only the head is retried; once it answers 2xx the backlog drains in order."""
    async with Receiver(numbered(lambda n: (500, {}) if n < 3 else (200, {}))) as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        await park_tasks(pool, webhook_id, tenant.id, 10)
        async with running_scheduler(short, pool):
            await rx.wait_for(lambda r: len(ok_numbers(r)) == 10)
            await wait_until(lambda: _not_parked(pool, webhook_id))
    assert ok_numbers(rx) == list(range(10))
    assert [r.json()["data"]["n"] for r in rx.requests[:4]] == [0, 0, 0, 0]
    assert len(rx.requests) == 13
    # every attempt is in the attempt log, with the parked attempt numbers continuing
    rows = await pool.fetch(
        "SELECT outcome, attempt FROM attempts WHERE webhook_id = $1 ORDER BY id", webhook_id
    )
    assert [r["outcome"] for r in rows] == ["failure"] * 3 + ["success"] * 10
    assert [r["attempt"] for r in rows[:4]] == [1, 2, 3, 4]


async def _not_parked(pool: Any, webhook_id: str) -> bool:
    return not await backlog.parked_among(pool, [webhook_id])


async def test_retry_after_is_honoured(short, pool, tenant) -> None:
    """A 429 with Retry-After: 2 is not retried sooner than about two seconds later."""
    async with Receiver(
        numbered(lambda n: (429, {"Retry-After": "2"}) if n == 0 else (200, {}))
    ) as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        await park_tasks(pool, webhook_id, tenant.id, 1)
        async with running_scheduler(short, pool):
            await rx.wait_for(lambda r: len(r.requests) == 2)
    first, second = rx.requests
    assert second.received_at - first.received_at >= 1.9


async def test_gone_disables_and_reenabling_drains_in_order(short, pool, tenant) -> None:
    """410 disables the webhook and keeps its backlog; re-enabling it delivers all in order."""
    gone = True
    async with Receiver(lambda _received: 410 if gone else 200) as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        await park_tasks(pool, webhook_id, tenant.id, 5)
        async with running_scheduler(short, pool):
            await wait_until(lambda: _state_is(pool, webhook_id, "DISABLED"))
            row = await webhook_row(pool, webhook_id)
            assert "410" in row["disabled_reason"]
            assert await backlog.backlog_sizes(pool, [webhook_id]) == {webhook_id: 5}
            assert len(rx.requests) == 1
            gone = False
            await update_webhook(pool, BOX, tenant.id, webhook_id, {"state": "ENABLED"})
            await rx.wait_for(lambda r: len(ok_numbers(r)) == 5)
            await wait_until(lambda: _not_parked(pool, webhook_id))
    assert ok_numbers(rx) == list(range(5))


async def _state_is(pool: Any, webhook_id: str, state: str) -> bool:
    row = await webhook_row(pool, webhook_id)
    return bool(row["state"] == state)


async def test_past_the_window_deliveries_fail_in_order(short, pool, tenant) -> None:
    """Past the retry window each delivery moves to failed_deliveries (in order), then unparks."""
    settings = short.replace(retry_window=1.5)
    async with Receiver(failing(500)) as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        event_ids = await park_tasks(pool, webhook_id, tenant.id, 3)
        async with running_scheduler(settings, pool):
            await wait_until(lambda: _not_parked(pool, webhook_id), within=30)
    rows = await pool.fetch(
        "SELECT event_id, reason, task FROM failed_deliveries WHERE webhook_id = $1 ORDER BY id",
        webhook_id,
    )
    assert [r["event_id"] for r in rows] == event_ids
    assert all("retry window" in r["reason"] for r in rows)
    assert rows[0]["task"]["event"]["data"] == {"n": 0}
    heads = [r.json()["data"]["n"] for r in rx.requests]
    assert heads.count(0) > 1  # the head was retried before it was given up
    assert heads == sorted(heads)  # never a later delivery before an earlier one
    assert (await webhook_row(pool, webhook_id))["state"] == "ENABLED"


async def test_auto_disable_after_continuous_failure(short, pool, tenant) -> None:
    """A webhook failing continuously for auto_disable_after is disabled with a reason."""
    settings = short.replace(auto_disable_after=1.5, retry_window=60.0)
    async with Receiver(failing(503)) as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        await park_tasks(pool, webhook_id, tenant.id, 2)
        async with running_scheduler(settings, pool):
            await wait_until(lambda: _state_is(pool, webhook_id, "DISABLED"), within=30)
    row = await webhook_row(pool, webhook_id)
    assert "failing continuously" in row["disabled_reason"]
    assert row["consecutive_failures"] >= 2
    assert await backlog.backlog_sizes(pool, [webhook_id]) == {webhook_id: 2}
    assert {r.json()["data"]["n"] for r in rx.requests} == {0}


class BlockedSender:
    """A sender whose every destination is forbidden (SSRF rules)."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        raise BlockedDestination("resolves to a private address")


async def test_blocked_destination_gives_up_at_once(short, pool, tenant) -> None:
    """A blocked destination is never retried: each delivery fails once, with the reason."""
    webhook_id = await make_webhook(pool, tenant.id)
    await park_tasks(pool, webhook_id, tenant.id, 2)
    async with running_scheduler(short, pool, BlockedSender()):
        await wait_until(lambda: _not_parked(pool, webhook_id))
    rows = await pool.fetch(
        "SELECT reason FROM failed_deliveries WHERE webhook_id = $1 ORDER BY id", webhook_id
    )
    assert [r["reason"] for r in rows] == ["resolves to a private address"] * 2


async def test_no_busy_loop_while_nothing_is_due(short, pool, tenant) -> None:
    """Nothing due (one parked far ahead, one DISABLED and overdue): the loop sleeps."""
    async with Receiver() as rx:
        later = await make_webhook(pool, tenant.id, rx.url)
        await park_tasks(pool, later, tenant.id, 1, due_in=3600)
        disabled = await make_webhook(pool, tenant.id, rx.url, state="DISABLED")
        await park_tasks(pool, disabled, tenant.id, 1, due_in=-60)
        with capture_logs() as logs:
            async with running_scheduler(short, pool):
                await asyncio.sleep(0.3)  # start-up: the listener's first wake-up
                passes = sleeps(logs)
                started = time.process_time()
                await asyncio.sleep(2.0)
                assert sleeps(logs) - passes <= 1
                cpu = time.process_time() - started
    assert rx.requests == []
    assert cpu < 0.5  # a spinning loop would burn the whole two seconds


async def test_wakes_when_something_is_parked(short, pool, tenant) -> None:
    """A sleeping scheduler starts on a newly parked webhook at once (NOTIFY), not in 30 s."""
    async with Receiver() as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        async with running_scheduler(short, pool):
            await asyncio.sleep(0.3)
            await park_tasks(pool, webhook_id, tenant.id, 3)
            await rx.wait_for(lambda r: len(ok_numbers(r)) == 3, within=10)
    assert ok_numbers(rx) == [0, 1, 2]


async def test_two_schedulers_share_the_work(short, pool, tenant) -> None:
    """Two schedulers on one database deliver every backlog once, each in order."""
    async with Receiver() as rx:
        ids = [await make_webhook(pool, tenant.id, rx.url) for _ in range(4)]
        async with running_scheduler(short, pool), running_scheduler(short, pool):
            for webhook_id in ids:
                await park_tasks(pool, webhook_id, tenant.id, 15)
            await rx.wait_for(lambda r: len(r.requests) >= 60)
            for webhook_id in ids:
                await wait_until(functools.partial(_not_parked, pool, webhook_id))
    assert len(rx.requests) == 60
    for webhook_id in ids:
        mine = [r.json()["data"]["n"] for r in rx.requests if r.json()["webhook_id"] == webhook_id]
        assert mine == list(range(15))


async def test_appends_during_a_drain_are_delivered_before_unparking(short, pool, tenant) -> None:
    """Deliveries appended while the backlog drains are sent too, in order, then it unparks."""
    async with Receiver() as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        await park_tasks(pool, webhook_id, tenant.id, 5)
        async with running_scheduler(short, pool):
            await rx.wait_for(lambda r: len(r.requests) >= 1)
            for n in range(5, 40):
                appended = await backlog.append_many_if_parked(
                    pool, webhook_id, [make_task(webhook_id, tenant.id, n)]
                )
                if not appended:
                    break
            await wait_until(lambda: _not_parked(pool, webhook_id))
            await rx.wait_for(lambda r: len(ok_numbers(r)) >= 5)
    numbers = ok_numbers(rx)
    assert numbers == list(range(len(numbers)))
    assert await backlog.backlog_sizes(pool, [webhook_id]) == {}


async def test_housekeeping_purges_old_attempts(short, pool, tenant) -> None:
    """The scheduler applies the attempt retention when it starts (and hourly)."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool)
    old = time.time() - (short.attempt_retention_days + 1) * 86400
    log.record(make_result(webhook_id, tenant.id, event_id="old", at=old))
    log.record(make_result(webhook_id, tenant.id, event_id="new"))
    await log.flush()

    async def only_new() -> bool:
        rows = await pool.fetch("SELECT event_id FROM attempts WHERE webhook_id = $1", webhook_id)
        return [r["event_id"] for r in rows] == ["new"]

    async with running_scheduler(short, pool):
        await wait_until(only_new)


async def test_fixing_the_url_retries_at_once(short, pool, tenant) -> None:
    """A parked webhook whose next retry is an hour away is retried as soon as it is edited."""
    async with Receiver() as rx:
        webhook_id = await make_webhook(pool, tenant.id, "http://127.0.0.1:9/broken")
        await park_tasks(pool, webhook_id, tenant.id, 3, due_in=3600)
        async with running_scheduler(short, pool):
            await asyncio.sleep(0.3)
            assert rx.requests == []
            await update_webhook(pool, BOX, tenant.id, webhook_id, {"url": rx.url})
            await rx.wait_for(lambda r: len(ok_numbers(r)) == 3, within=10)
    assert ok_numbers(rx) == [0, 1, 2]


async def test_a_drain_paces_at_the_webhooks_rate_limit(short, pool, tenant) -> None:
    """A 5/s webhook's backlog drains in order at no more than 5 (+ the burst of 1) a second."""
    async with Receiver() as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url, rate_limit={"per_second": 5})
        await park_tasks(pool, webhook_id, tenant.id, 12)
        async with running_scheduler(short, pool):
            await rx.wait_for(lambda r: len(ok_numbers(r)) == 12)
            await wait_until(lambda: _not_parked(pool, webhook_id))
    assert ok_numbers(rx) == list(range(12))
    arrivals = sorted(r.received_at for r in rx.requests)
    assert busiest_second(arrivals) <= 6
    assert arrivals[-1] - arrivals[0] >= 2.0  # 12 at 5/s: the first is free, 11 more at 0.2 s
