"""Per-endpoint pacing end to end: rate limits and adaptive concurrency (issue #14).

Everything real (the broker, Postgres, router and deliverer in-process); programmable
loopback receivers answer and record what arrives, and the assertions are on what the
receiver saw: counts per one-second window, concurrency, status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from dispatcher.delivery.secrets import SecretBox
from dispatcher.kafka.producer import Outgoing, Producer
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import update_webhook
from tests.conftest import TenantKey
from tests.support.pipeline import (
    busiest_second,
    create_webhook,
    ensure_mirror_topics,
    running,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Received, Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"


async def publish(settings: Settings, tenant_id: str, count: int) -> list[str]:
    async with Producer(settings) as producer:
        return await producer.publish_many(
            Outgoing(TOPIC, {"n": n}, tenant_id) for n in range(count)
        )


async def window_of(pool: asyncpg.Pool, webhook_id: str) -> int | None:
    """The adaptive window the deliverer last reported (the object's ``concurrency``)."""
    value = await pool.fetchval("SELECT concurrency FROM webhooks WHERE id = $1::uuid", webhook_id)
    return None if value is None else int(value)


async def test_a_rate_limited_webhook_gets_at_most_its_rate_and_its_neighbour_is_not_held(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """5/s: never more than 5 (+ the burst of 1) in any second over 10 s; the other is not held."""
    await ensure_mirror_topics(settings, [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)
    async with Receiver() as rx:
        limited = await create_webhook(pool, settings, tenant.id, rx.url_for("limited"), [TOPIC])
        await create_webhook(pool, settings, tenant.id, rx.url_for("free"), [TOPIC])
        await update_webhook(pool, box, tenant.id, limited.id, {"rate_limit": {"per_second": 5}})
        async with running(settings):
            sent = await publish(settings, tenant.id, 55)
            await wait_until(
                lambda: {r.event_id for r in rx.on("limited")} >= set(sent),
                within=60,
                message="every event at the limited webhook",
            )
    limited_at = [r.received_at for r in rx.on("limited")]
    free_at = [r.received_at for r in rx.on("free")]
    assert {r.event_id for r in rx.on("free")} >= set(sent)
    print(
        f"5/s: {len(limited_at)} requests over {max(limited_at) - min(limited_at):.1f} s,"
        f" busiest second {busiest_second(limited_at)}; unlimited done after"
        f" {max(free_at) - min(free_at):.2f} s"
    )
    assert max(limited_at) - min(limited_at) >= 10.0  # 55 at 5/s: measured over 10 s and more
    assert busiest_second(limited_at) <= 6
    assert max(free_at) < max(limited_at)


@dataclass
class Capacity:
    """A receiver that handles ``capacity`` requests at once and answers 503 beyond that."""

    capacity: int
    service_s: float
    in_flight: int = 0
    seen: list[tuple[int, int]] = field(default_factory=list)  # (in flight on arrival, status)
    # ``in_flight`` every SAMPLE_S while requests come (0 before the first one)
    samples: list[int] = field(default_factory=list)

    async def __call__(self, _received: Received) -> int:
        self.in_flight += 1
        try:
            if self.in_flight > self.capacity:
                self.seen.append((self.in_flight, 503))
                return 503
            self.seen.append((self.in_flight, 200))
            await asyncio.sleep(self.service_s)
            return 200
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def run_unordered(
    settings: Settings,
    pool: asyncpg.Pool,
    tenant: TenantKey,
    receiver: Capacity,
    max_in_flight: int,
    events: int,
) -> AsyncIterator[tuple[str, list[int]]]:
    """Deliver ``events`` to an unordered webhook; yields its id and the reported windows.

    The router and deliverer run until the block ends.
    """
    await ensure_mirror_topics(settings, [TOPIC])
    reported: list[int] = []
    async with Receiver(respond=receiver) as rx:
        hook = await create_webhook(
            pool,
            settings,
            tenant.id,
            rx.url,
            [TOPIC],
            ordering="unordered",
            max_in_flight=max_in_flight,
        )
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)

        async def sample() -> None:
            while True:
                window = await window_of(pool, hook.id)
                if window is not None:
                    reported.append(window)
                for _ in range(10):
                    if receiver.seen:
                        receiver.samples.append(receiver.in_flight)
                    await asyncio.sleep(0.025)

        sampler = asyncio.create_task(sample())
        try:
            sent = set(await publish(settings, tenant.id, events))
            await wait_until(
                lambda: (
                    {
                        r.event_id
                        for r, (_, status) in zip(rx.requests, receiver.seen, strict=True)
                        if status == 200
                    }
                    >= sent
                ),
                within=120,
                message="every event answered 200",
            )
            yield hook.id, reported
        finally:
            sampler.cancel()
            await deliverer.stop()
            await router.stop()


async def test_the_window_converges_to_a_receivers_capacity(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """503 above 4 at once: the window settles about 4 and under 5% of answers are 503."""
    receiver = Capacity(capacity=4, service_s=0.05)
    async with run_unordered(settings, pool, tenant, receiver, 16, 400) as (_, reported):
        pass
    warmed_up = receiver.seen[50:]
    overloads = sum(status == 503 for _, status in warmed_up) / len(warmed_up)
    # The window as the receiver lives it: requests in flight, sampled over time, while
    # there was work (the last samples may be the idle tail).
    busy = [n for n in receiver.samples[len(receiver.samples) // 10 :] if n > 0]
    concurrency = statistics.mean(busy)
    print(
        f"capacity 4: {len(receiver.seen)} requests, 503 after warm-up {overloads:.1%},"
        f" mean in flight {concurrency:.2f} (max {max(busy)}), reported windows {reported}"
    )
    assert overloads < 0.05
    assert 2.5 <= concurrency <= 4.5
    assert max(busy) <= 5
    assert reported and 2 <= statistics.median(reported) <= 5


async def test_the_window_grows_to_the_ceiling_against_a_fast_receiver(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A receiver that keeps up gets max_in_flight at once, and the object shows it."""
    receiver = Capacity(capacity=10_000, service_s=0.02)
    async with run_unordered(settings, pool, tenant, receiver, 8, 300) as (webhook_id, _):

        async def reported_ceiling() -> bool:
            return await window_of(pool, webhook_id) == 8

        await wait_until(reported_ceiling, within=10, message="concurrency 8 on the webhook")
    assert max(in_flight for in_flight, _ in receiver.seen) == 8
    assert not [status for _, status in receiver.seen if status != 200]
