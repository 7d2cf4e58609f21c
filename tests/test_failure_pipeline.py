"""Failure handling end to end: producer → router → deliverer (+ backlog scheduler) → receivers.

Receivers fail on purpose; a short schedule (short retries 0.05-0.5 s, park after 1 s,
long retries every second) keeps every scenario within seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from structlog.testing import capture_logs

from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store import backlog
from tests.conftest import TenantKey
from tests.support.api import api_client
from tests.support.failure import clean_backlog
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    set_state,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Received, Receiver

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)

TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"


@pytest.fixture
def short(settings: Settings) -> Settings:
    return settings.replace(
        retry_schedule=(0.05, 0.1, 0.2, 0.5, 1.0, 1.0), park_after=1.0, retry_window=6.0
    )


@asynccontextmanager
async def pipeline(settings: Settings, group_id: str | None = None) -> AsyncIterator[Any]:
    """Router and deliverer running in-process for the test."""
    await ensure_mirror_topics(settings, [TOPIC])
    router = await start_router(settings)
    deliverer = await start_deliverer(settings, group_id=group_id)
    try:
        yield deliverer
    finally:
        await deliverer.stop()
        await router.stop()


async def publish(settings: Settings, tenant_id: str, numbers: range) -> list[str]:
    """Publish one event per number (same ordering key), returning their ids in order."""
    async with Producer(settings) as producer:
        return [
            await producer.publish(TOPIC, {"state": "TX", "n": n}, tenant_id=tenant_id, key="k")
            for n in numbers
        ]


def accepted(requests: list[Received]) -> list[str]:
    """Event ids the receiver answered 2xx, in arrival order (first time each)."""
    seen: dict[str, None] = {}
    for request in requests:
        if request.headers.get("x-answer") == "2xx":
            seen.setdefault(request.event_id, None)
    return list(seen)


def always(status: int) -> Any:
    def respond(request: Received) -> int:
        request.headers["x-answer"] = "2xx" if status < 300 else str(status)
        return status

    return respond


async def webhook_state(pool: asyncpg.Pool, webhook_id: str) -> tuple[str, str | None]:
    row = await pool.fetchrow(
        "SELECT state, disabled_reason FROM webhooks WHERE id = $1::uuid", webhook_id
    )
    assert row is not None
    return row["state"], row["disabled_reason"]


async def test_flaky_endpoint_receives_everything_in_order(
    short: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """An endpoint failing until it is parked then gets every event in order."""
    async with Receiver() as rx:
        hook = await create_webhook(pool, short, tenant.id, rx.url, [TOPIC])
        async with pipeline(short):
            # Failing until parked, not for a fixed 3 s: at a load of 20 the first attempt
            # came after those 3 s ("the endpoint never failed").
            rx.respond = always(500)
            sent = await publish(short, tenant.id, range(10))

            async def parked() -> bool:
                return bool(await backlog.parked_among(pool, [hook.id]))

            await wait_until(parked, within=60, message="the failing webhook parked")
            rx.respond = always(200)
            await wait_until(lambda: len(accepted(rx.requests)) >= 10, within=60)

            async def unparked() -> bool:
                return not await backlog.parked_among(pool, [hook.id])

            # The scheduler unparks after the last 2xx, on its next look at the backlog:
            # a deliverer stopped in between leaves it parked (empty) for the next one.
            await wait_until(unparked, within=60, message="the drained webhook unparked")
    assert accepted(rx.requests) == sent
    failures = [r for r in rx.requests if r.headers["x-answer"] != "2xx"]
    assert failures, "the endpoint never failed: the test proves nothing"
    # While failing, only the head was retried.
    assert {r.event_id for r in failures} == {sent[0]}


async def test_retry_after_is_honoured(
    short: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A 429 with Retry-After: 2 is not retried sooner than about two seconds later."""
    from aiohttp import web

    def respond(request: Received) -> Any:
        if len(rx.requests) == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        request.headers["x-answer"] = "2xx"
        return 200

    async with Receiver(respond) as rx:
        await create_webhook(pool, short, tenant.id, rx.url, [TOPIC])
        async with pipeline(short):
            [sent] = await publish(short, tenant.id, range(1))
            await wait_until(lambda: len(accepted(rx.requests)) == 1, within=60)
    first, second = rx.requests[:2]
    assert first.event_id == second.event_id == sent
    assert second.received_at - first.received_at >= 1.9


async def test_gone_disables_the_webhook(
    short: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A 410 answer disables the webhook with a reason; it is not retried."""
    async with Receiver(always(410)) as rx:
        hook = await create_webhook(pool, short, tenant.id, rx.url, [TOPIC])
        async with pipeline(short):
            await publish(short, tenant.id, range(1))

            async def disabled() -> bool:
                return (await webhook_state(pool, hook.id))[0] == "DISABLED"

            await wait_until(disabled, within=60)
        state, reason = await webhook_state(pool, hook.id)
    assert state == "DISABLED"
    assert reason and "410" in reason
    assert len(rx.requests) == 1


async def committed(settings: Settings, group_id: str) -> int | None:
    """The deliverer group's committed offset on deliveries partition 0."""
    partition = TopicPartition(settings.deliveries_topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(partition)
    finally:
        await consumer.stop()
    return offset


async def test_dead_endpoint_is_parked_and_its_partition_moves_on(
    short: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A dead endpoint is parked in Postgres, offsets advance, a healthy neighbour keeps going."""
    # Both webhooks share the one partition; a long window keeps the dead one parked.
    settings = short.replace(deliveries_partitions=1, retry_window=600.0)
    group_id = f"hooklane-deliverer-{uuid.uuid4().hex[:8]}"
    async with Receiver() as rx:
        rx.respond = lambda request: (
            always(500)(request) if request.path == "/dead" else always(200)(request)
        )
        dead = await create_webhook(pool, settings, tenant.id, rx.url_for("dead"), [TOPIC])
        await create_webhook(pool, settings, tenant.id, rx.url_for("healthy"), [TOPIC])
        async with pipeline(settings, group_id=group_id):
            first = await publish(settings, tenant.id, range(5))
            await wait_until(lambda: len(accepted(rx.on("healthy"))) == 5, within=60)

            async def parked() -> bool:
                sizes = await backlog.backlog_sizes(pool, [dead.id])
                return sizes.get(dead.id, 0) == 5

            await wait_until(parked, within=60)
            # Later events: the healthy webhook gets them; the dead one's go to its backlog.
            later = await publish(settings, tenant.id, range(5, 8))
            await wait_until(lambda: len(accepted(rx.on("healthy"))) == 8, within=60)

            async def appended() -> bool:
                sizes = await backlog.backlog_sizes(pool, [dead.id])
                return sizes.get(dead.id, 0) == 8

            await wait_until(appended, within=60)

            async def offsets_advanced() -> bool:
                # 8 events x 2 webhooks = 16 tasks at offsets 0-15, all finished: 5 of
                # them only by parking, 3 by appending to the backlog.
                return await committed(settings, group_id) == 16

            await wait_until(offsets_advanced, within=60)
            assert await backlog.parked_among(pool, [dead.id])
    assert accepted(rx.on("healthy")) == first + later
    entries = await backlog.head(pool, dead.id, 100)
    assert [e.task.event.id for e in entries] == first + later


async def test_reenabling_drains_the_backlog_in_order(
    short: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A parked webhook disabled by a 410 keeps its backlog; re-enabled, it gets it all in order."""
    answer = {"status": 500}

    def respond(request: Received) -> int:
        return always(answer["status"])(request)  # type: ignore[no-any-return]

    async with Receiver(respond) as rx:
        hook = await create_webhook(pool, short, tenant.id, rx.url, [TOPIC])
        async with pipeline(short):
            sent = await publish(short, tenant.id, range(6))

            async def parked_all() -> bool:
                return (await backlog.backlog_sizes(pool, [hook.id])).get(hook.id, 0) == 6

            await wait_until(parked_all, within=60)
            answer["status"] = 410

            async def disabled() -> bool:
                return (await webhook_state(pool, hook.id))[0] == "DISABLED"

            await wait_until(disabled, within=60)
            assert (await backlog.backlog_sizes(pool, [hook.id])) == {hook.id: 6}
            answer["status"] = 200
            await set_state(pool, hook.id, "ENABLED")
            await wait_until(lambda: len(accepted(rx.requests)) == 6, within=60)
    assert accepted(rx.requests) == sent


async def test_past_the_window_fails_and_can_be_recovered(
    short: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Past the retry window deliveries are marked failed; recover re-sends them in order."""
    settings = short.replace(retry_window=2.5)
    answer = {"status": 500}

    def respond(request: Received) -> int:
        return always(answer["status"])(request)  # type: ignore[no-any-return]

    async with Receiver(respond) as rx:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        async with pipeline(settings):
            sent = await publish(settings, tenant.id, range(3))

            async def all_failed() -> bool:
                count = await pool.fetchval(
                    "SELECT count(*) FROM failed_deliveries WHERE webhook_id = $1::uuid", hook.id
                )
                return bool(count == 3)

            await wait_until(all_failed, within=60)
            assert accepted(rx.requests) == []
            answer["status"] = 200
            since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
            async with api_client(settings) as client:
                response = await client.post(
                    f"/webhooks/{hook.id}/recover", json={"since": since}, headers=tenant.headers
                )
                assert response.status == 202
                assert await response.json() == {"queued": 3}
            await wait_until(lambda: len(accepted(rx.requests)) == 3, within=60)
    assert accepted(rx.requests) == sent
    left = await pool.fetchval(
        "SELECT count(*) FROM failed_deliveries WHERE webhook_id = $1::uuid", hook.id
    )
    assert left == 0


async def test_a_parked_endpoint_is_left_alone_between_attempts(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Once parked with its next retry far away, nothing polls for it: no requests, no passes."""
    hourly = settings.replace(retry_schedule=(0.05, 0.1, 0.2, 0.5, 3600.0), park_after=1.0)
    async with Receiver(always(500)) as rx:
        hook = await create_webhook(pool, hourly, tenant.id, rx.url, [TOPIC])
        with capture_logs() as logs:
            async with pipeline(hourly):
                await publish(hourly, tenant.id, range(3))

                async def parked() -> bool:
                    return (await backlog.backlog_sizes(pool, [hook.id])).get(hook.id, 0) == 3

                def sleeps() -> list[MutableMapping[str, Any]]:
                    return [entry for entry in logs if entry["event"] == "scheduler.sleeping"]

                await wait_until(parked, within=60)
                # the scheduler's pass after parking: nothing active, the next retry far away
                await wait_until(
                    lambda: any(s["active"] == 0 and s["seconds"] > 2 for s in sleeps()), within=30
                )
                requests, passes = len(rx.requests), len(sleeps())
                await asyncio.sleep(2.0)
                assert len(rx.requests) == requests
                assert len(sleeps()) - passes <= 1
