"""Backpressure: a deliverer with too much unfinished work pauses its partitions, then resumes."""

from __future__ import annotations

import asyncio

import asyncpg
from structlog.testing import capture_logs

from dispatcher.deliverer import Deliverer
from dispatcher.kafka.producer import Outgoing, Producer
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Received, Receiver

TOPIC = "EXEMPTION_CERTIFICATES.EXPIRATION"


async def test_partitions_pause_above_the_buffer_bound_and_resume_below_it(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """With a stuck receiver the deliverer stops fetching; once it answers, all arrive."""
    await ensure_mirror_topics(settings, [TOPIC])
    gate = asyncio.Event()

    async def stuck(_request: Received) -> int:
        await gate.wait()
        return 200

    def events() -> list[str]:
        return [e["event"] for e in logs if e["event"] in {"deliverer.paused", "deliverer.resumed"}]

    with capture_logs() as logs:
        async with Receiver(respond=stuck) as rx:
            await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
            router = await start_router(settings)
            deliverer = await start_deliverer(settings, max_buffered=20)
            service = deliverer.service
            assert isinstance(service, Deliverer)
            try:
                async with Producer(settings) as producer:
                    ids = await producer.publish_many(
                        Outgoing(TOPIC, {"n": n}, tenant.id) for n in range(200)
                    )
                await wait_until(lambda: events() == ["deliverer.paused"], message="paused")
                # bounded: at most the bound plus one fetched batch
                assert service.outstanding < 20 + 500
                gate.set()
                await wait_until(lambda: set(rx.event_ids()) >= set(ids), within=60)
                await wait_until(lambda: events()[-1:] == ["deliverer.resumed"], message="resumed")
            finally:
                gate.set()
                await deliverer.stop()
                await router.stop()


async def test_a_hanging_endpoint_does_not_pause_fetching_for_the_others(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """Deliveries queued behind a request hanging for a second or more do not count
    against the buffer: a healthy webhook's later events are fetched and delivered
    while the hanging one still has not answered (memory stays bounded: see
    ``Deliverer.outstanding``)."""
    await ensure_mirror_topics(settings, [TOPIC])
    gate = asyncio.Event()

    async def hang(_request: Received) -> int:
        await gate.wait()
        return 200

    other = other_tenant.id
    async with Receiver(respond=hang) as stuck_rx, Receiver() as ok_rx:
        await create_webhook(pool, settings, tenant.id, stuck_rx.url, [TOPIC])
        await create_webhook(pool, settings, other, ok_rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(
            settings.replace(delivery_timeout_s=60.0), max_buffered=20
        )
        try:
            async with Producer(settings) as producer:
                stuck_ids = await producer.publish_many(
                    Outgoing(TOPIC, {"n": n}, tenant.id) for n in range(40)
                )
                await wait_until(lambda: len(stuck_rx.event_ids()) == 1, message="hanging")
                healthy_ids = await producer.publish_many(
                    Outgoing(TOPIC, {"n": n}, other) for n in range(20)
                )
            await wait_until(
                lambda: set(ok_rx.event_ids()) >= set(healthy_ids),
                within=30,
                message="the healthy webhook's events arrive while the other hangs",
            )
            assert not gate.is_set() and len(stuck_rx.event_ids()) == 1
            gate.set()
            await wait_until(lambda: set(stuck_rx.event_ids()) >= set(stuck_ids), within=60)
        finally:
            gate.set()
            await deliverer.stop()
            await router.stop()
