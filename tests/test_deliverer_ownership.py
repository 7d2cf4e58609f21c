"""Order survives partition moves: parked webhooks keep their backlog at the head.

Real deliverer processes, the real broker and Postgres: eight webhooks fail until they
are parked, then partitions move (the owner is SIGKILLed, leaves on SIGTERM, or a third
deliverer joins), the endpoints recover and newer events are published. Whoever owns a
webhook now must send its parked events before the newer ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import pytest

from dispatcher.kafka.producer import Outgoing, Producer
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.pipeline import (
    Spawned,
    create_webhook,
    ensure_mirror_topics,
    spawn_deliverer,
    start_router,
    wait_for_every_event,
    wait_until,
)
from tests.support.receiver import Received, Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
WEBHOOKS = 8
PARTITIONS = {0, 1, 2, 3}


async def _publish(settings: Settings, tenant_id: str, numbers: range) -> list[str]:
    # One ordering key (the tenant): the publish order is the order every webhook must see.
    async with Producer(settings) as producer:
        return await producer.publish_many(Outgoing(TOPIC, {"n": n}, tenant_id) for n in numbers)


def _first_arrivals(requests: Sequence[Received]) -> list[str]:
    seen: dict[str, None] = {}
    for request in requests:
        seen.setdefault(request.event_id)
    return list(seen)


async def _backlog_sizes(pool: asyncpg.Pool, tenant_id: str) -> list[int]:
    """The backlog size of each parked webhook of ``tenant_id`` (the session database
    holds what earlier tests left parked: counting theirs, ``every webhook parked``
    never came true)."""
    rows = await pool.fetch(
        "SELECT count(b.seq) AS n FROM parked_webhooks p"
        " JOIN webhooks w ON w.id = p.webhook_id"
        " LEFT JOIN backlog b ON b.webhook_id = p.webhook_id"
        " WHERE w.tenant_id = $1 GROUP BY p.webhook_id",
        tenant_id,
    )
    return [row["n"] for row in rows]


def _split(deliverers: Sequence[Spawned]) -> bool:
    """Every partition owned by exactly one of ``deliverers``, each owning some."""
    owned = [d.partitions for d in deliverers]
    disjoint = sum(map(len, owned)) == len(PARTITIONS)
    return all(owned) and disjoint and set().union(*owned) == PARTITIONS


@pytest.mark.parametrize("move", ["sigkill", "sigterm", "join"])
async def test_parked_webhooks_keep_order_when_their_partitions_move(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, move: str
) -> None:
    """Partitions move while webhooks are parked: each still receives every event in order."""
    settings = settings.replace(
        retry_schedule=(0.05, 0.05, 0.3, 0.5),
        park_after=0.2,
        delivery_timeout_s=2.0,
        log_level="INFO",
    )
    await ensure_mirror_topics(settings, [TOPIC])
    failing = True

    def respond(_request: Received) -> int:
        return 500 if failing else 200

    async with Receiver(respond=respond) as rx:
        paths = [f"w{n}" for n in range(WEBHOOKS)]
        for path in paths:
            await create_webhook(pool, settings, tenant.id, rx.url_for(path), [TOPIC])
        router = await start_router(settings)
        deliverers = [
            await spawn_deliverer(settings, capture_logs=True),
            await spawn_deliverer(settings, capture_logs=True),
        ]
        try:
            await wait_until(lambda: _split(deliverers), within=60, message="two owners")
            published = await _publish(settings, tenant.id, range(20))

            async def all_parked() -> bool:
                sizes = await _backlog_sizes(pool, tenant.id)
                return len(sizes) == WEBHOOKS and all(size >= 20 for size in sizes)

            await wait_until(all_parked, within=60, message="every webhook parked")
            if move == "sigkill":
                deliverers[0].kill()
                await deliverers[0].process.wait()
                survivors = deliverers[1:]
            elif move == "sigterm":
                assert await deliverers[0].terminate() == 0
                survivors = deliverers[1:]
            else:
                deliverers.append(await spawn_deliverer(settings, capture_logs=True))
                survivors = deliverers
            await wait_until(lambda: _split(survivors), within=60, message="partitions moved")
            failing = False
            published += await _publish(settings, tenant.id, range(20, 40))
            await wait_for_every_event(rx, paths, published)
        finally:
            for deliverer in deliverers:
                deliverer.kill()
            await router.stop()
    for path in paths:
        assert _first_arrivals(rx.on(path)) == published, path
