"""Idempotent ingest end to end: real broker, Postgres, router, deliverer and the API.

The same event id published twice via Kafka and twice via ``POST /events`` (with the
``Idempotency-Key`` header, and with the body's ``id``) reaches each webhook once, also
across a router restart; outside the dedup window it is routed again.
"""

from __future__ import annotations

import uuid
from collections import Counter

import asyncpg

from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.api import Client, api_client
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
DATA = {"registration_id": "reg_1"}


async def post_event(
    client: Client, tenant: TenantKey, *, key: str | None = None, body_id: str | None = None
) -> tuple[int, str]:
    headers = dict(tenant.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    body = {"topic": TOPIC, "data": DATA, **({"id": body_id} if body_id else {})}
    response = await client.post("/events", json=body, headers=headers)
    return response.status, (await response.json())["id"]


def ids_in(rx: Receiver, path: str, *wanted: str) -> bool:
    return set(wanted) <= set(rx.event_ids(path))


async def test_an_event_id_is_delivered_once_per_webhook_from_kafka_and_the_api(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Repeats via Kafka, Idempotency-Key and body id, around a router restart: once each."""
    await ensure_mirror_topics(settings, [TOPIC])
    group = f"hooklane-router-{uuid.uuid4().hex[:8]}"
    kafka_id, header_key, body_id = (f"{kind}-{uuid.uuid4().hex}" for kind in "khb")
    async with Receiver() as rx, api_client(settings) as client:
        for path in ("a", "b"):
            await create_webhook(pool, settings, tenant.id, rx.url_for(path), [TOPIC])
        router = await start_router(settings, group_id=group)
        deliverer = await start_deliverer(settings)
        try:
            async with Producer(settings) as producer:
                for _ in range(2):
                    await producer.publish(TOPIC, DATA, tenant.id, event_id=kafka_id)
                assert await post_event(client, tenant, key=header_key) == (202, header_key)
                assert await post_event(client, tenant, key=header_key) == (200, header_key)
                assert await post_event(client, tenant, body_id=body_id) == (202, body_id)
                assert await post_event(client, tenant, body_id=body_id) == (200, body_id)
                first_marker = await producer.publish(TOPIC, DATA, tenant.id)
                await wait_until(
                    lambda: all(ids_in(rx, p, first_marker, kafka_id) for p in ("a", "b"))
                )
                await router.stop()
                router = await start_router(settings, group_id=group)
                await producer.publish(TOPIC, DATA, tenant.id, event_id=kafka_id)
                assert await post_event(client, tenant, key=header_key) == (200, header_key)
                assert await post_event(client, tenant, body_id=body_id) == (200, body_id)
                # Same ordering key (the tenant): routed after every repeat above.
                last_marker = await producer.publish(TOPIC, DATA, tenant.id)
                await wait_until(lambda: all(ids_in(rx, p, last_marker) for p in ("a", "b")))
        finally:
            await deliverer.stop()
            await router.stop()
    for path in ("a", "b"):
        counts = Counter(rx.event_ids(path))
        assert counts == {kafka_id: 1, header_key: 1, body_id: 1, first_marker: 1, last_marker: 1}


async def test_an_id_older_than_the_dedup_window_is_routed_again(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """With a one-second window, the same id routed two seconds ago is delivered again."""
    settings = settings.replace(dedup_window=1.0)
    await ensure_mirror_topics(settings, [TOPIC])
    event_id = f"old-{uuid.uuid4().hex}"
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        async with running(settings), Producer(settings) as producer:
            await producer.publish(TOPIC, DATA, tenant.id, event_id=event_id)
            await wait_until(lambda: event_id in rx.event_ids())
            # The window passes: the routed event is made two seconds older.
            await pool.execute(
                "UPDATE events SET routed_at = routed_at - interval '2 seconds'"
                " WHERE tenant_id = $1 AND event_id = $2",
                tenant.id,
                event_id,
            )
            await producer.publish(TOPIC, DATA, tenant.id, event_id=event_id)
            await wait_until(lambda: rx.event_ids().count(event_id) == 2)
    assert rx.event_ids() == [event_id, event_id]


async def test_a_malformed_idempotency_key_is_400_and_a_mismatched_id_422(
    settings: Settings, tenant: TenantKey
) -> None:
    """Keys outside the allowed characters or length are refused, as is a body id that differs."""
    async with api_client(settings) as client:
        for bad in ("has space", "x" * 201, 'quote"d', ""):
            headers = {**tenant.headers, "Idempotency-Key": bad}
            response = await client.post(
                "/events", json={"topic": TOPIC, "data": DATA}, headers=headers
            )
            assert response.status == 400, bad
            assert (await response.json())["error"]["code"] == "invalid_idempotency_key"
        response = await client.post(
            "/events",
            json={"topic": TOPIC, "data": DATA, "id": "evt-a"},
            headers={**tenant.headers, "Idempotency-Key": "evt-b"},
        )
        assert response.status == 422
        assert (await response.json())["error"]["details"][0]["path"] == "/id"
