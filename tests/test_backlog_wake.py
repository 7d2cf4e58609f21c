"""A fixed receiver does not wait for the long schedule: a 2xx test trigger, an attempt
retry or the portal's "Retry now" makes a parked backlog drain at once, in order."""

from __future__ import annotations

import time

import asyncpg

from dispatcher.settings import Settings
from dispatcher.store import backlog
from dispatcher.store.attempt_store import record_one
from tests.conftest import TenantKey
from tests.support.api import api_client
from tests.support.failure import make_result, make_task
from tests.support.pipeline import create_webhook, start_deliverer, wait_until
from tests.support.portal import csrf_of, portal_client, sign_in
from tests.support.receiver import Receiver

TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"  # make_task's topic
HOUR = 3600.0


async def park_three(pool: asyncpg.Pool, webhook_id: str, tenant_id: str) -> list[str]:
    """Park ``webhook_id`` with three deliveries, its next retry an hour away; their ids."""
    tasks = [make_task(webhook_id, tenant_id, n) for n in range(3)]
    now = time.time()
    await backlog.park(pool, webhook_id, tasks, now - 600, 7, now + HOUR)
    return [task.event.id for task in tasks]


async def test_a_successful_test_trigger_drains_a_parked_backlog_at_once(
    internal_topics: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """The endpoint is back: the test event's 200 starts the drain, in order."""
    settings = internal_topics
    async with Receiver() as rx, api_client(settings) as client:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        parked = await park_three(pool, hook.id, tenant.id)
        deliverer = await start_deliverer(settings)
        try:
            response = await client.post(
                f"/webhooks/test/trigger/{hook.id}", headers=tenant.headers
            )
            assert (await response.json())["delivered"] is True

            def drained() -> list[str]:
                return [r.json()["id"] for r in rx.requests if "n" in r.json()["data"]]

            # The next scheduled retry is an hour away: only the wake-up can do this.
            await wait_until(lambda: len(drained()) == 3, within=15, message="the drain")
            await wait_until(lambda: _not_parked(pool, hook.id), within=15)
        finally:
            await deliverer.stop()
    assert drained() == parked


async def _not_parked(pool: asyncpg.Pool, webhook_id: str) -> bool:
    return not await backlog.parked_among(pool, [webhook_id])


async def test_a_failed_test_trigger_leaves_the_schedule_alone(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A non-2xx test answer changes nothing: the next attempt stays an hour away."""
    async with Receiver(respond=lambda _: 503) as rx, api_client(settings) as client:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        await park_three(pool, hook.id, tenant.id)
        before = await backlog.next_attempts(pool, [hook.id])
        response = await client.post(f"/webhooks/test/trigger/{hook.id}", headers=tenant.headers)
        assert (await response.json())["delivered"] is False
    assert await backlog.next_attempts(pool, [hook.id]) == before


async def test_portal_shows_the_parked_backlog_and_retry_now_makes_it_due(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """The webhook page says "parked backlog: 3, next attempt at …"; "Retry now" and an
    attempt retry make the head due now."""
    hook = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/", [TOPIC])
    await park_three(pool, hook.id, tenant.id)
    async with portal_client(settings) as client:
        await sign_in(client, tenant)
        page = await (await client.get(f"/portal/webhooks/{hook.id}")).text()
        assert "parked backlog: 3, next attempt at" in page and "Retry now" in page
        answer = await client.post(
            f"/portal/webhooks/{hook.id}/backlog/retry", data={"csrf_token": csrf_of(page)}
        )
        assert answer.status == 200
        assert "being retried now" in await answer.text()
    due = (await backlog.next_attempts(pool, [hook.id]))[hook.id]
    assert due.timestamp() <= time.time()


async def test_an_attempt_retry_wakes_the_parked_backlog(
    internal_topics: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Retrying one of a parked webhook's attempts retries the backlog's head now."""
    settings = internal_topics
    hook = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/", [TOPIC])
    events = await park_three(pool, hook.id, tenant.id)
    attempt_id = await record_one(
        pool, make_result(hook.id, tenant.id, status=503, event_id=events[0])
    )
    async with api_client(settings) as client:
        response = await client.post(
            f"/webhooks/{hook.id}/attempts/{attempt_id}/retry", headers=tenant.headers
        )
        assert response.status == 202, await response.text()
    due = (await backlog.next_attempts(pool, [hook.id]))[hook.id]
    assert due.timestamp() <= time.time()
