"""No Kafka record can stop routing: poison records are dead-lettered, the rest flows.

A record nested 300 levels deep (valid JSON that orjson reads but cannot write again)
used to crash the router on every restart, and a NUL character cannot be stored by
Postgres. Both are dead-lettered with their reasons; events behind them on the same key
and another tenant's events are delivered; the router process never restarts.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from dispatcher.settings import Settings
from dispatcher.store import events as event_store
from tests.conftest import TenantKey
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    spawn,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver
from tests.test_json_limits import deep_json
from tests.test_malformed import event, read_dead_letters

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"


def headers_of(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def test_poison_records_are_dead_lettered_and_the_router_keeps_its_pid(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """The 300-level and NUL records are dead-lettered; what follows them is delivered."""
    await ensure_mirror_topics(settings, [TOPIC])
    deep = orjson.dumps(event(tenant.id, data={"registration_id": "r", "x": 0}))
    deep = deep.replace(b'"x":0', b'"x":' + deep_json(300))  # orjson writes 254 at most
    nul = orjson.dumps(event(tenant.id, data={"registration_id": "r\x00"}))
    behind = [event(tenant.id) for _ in range(3)]
    other = event(other_tenant.id)
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        await create_webhook(pool, settings, other_tenant.id, rx.url, [TOPIC])
        router = await spawn("dispatcher.router", settings, capture_logs=True)
        pid = router.process.pid
        deliverer = await start_deliverer(settings)
        kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await kafka.start()
        try:
            key = b"one-key"  # the poison and the events behind it share a partition
            topic = settings.mirror_topic(TOPIC)
            deep_at = await kafka.send_and_wait(topic, deep, key=key)
            nul_at = await kafka.send_and_wait(topic, nul, key=key)
            for value in behind:
                await kafka.send_and_wait(topic, orjson.dumps(value), key=key)
            await kafka.send_and_wait(topic, orjson.dumps(other), key=b"another-key")
            wanted = {value["id"] for value in [*behind, other]}
            await wait_until(lambda: wanted <= set(rx.event_ids()), 60, message="the events")
            dead = await read_dead_letters(settings, 2)
            assert router.process.returncode is None, "the router exited"
            assert router.process.pid == pid
        finally:
            await kafka.stop()
            await deliverer.stop()
            code = await router.terminate()
    assert code == 0, "the router exits cleanly when asked"
    assert set(rx.event_ids()) == wanted
    reasons = {
        headers_of(r)["hooklane-source-offset"]: headers_of(r)["hooklane-reason"] for r in dead
    }
    assert "nested deeper than 64 levels" in reasons[str(deep_at.offset)]
    assert "NUL character" in reasons[str(nul_at.offset)]
    assert not [line for line in router.logs if line.get("event") == "router.internal_error"]


async def test_an_unexpected_error_on_one_record_dead_letters_it_as_internal(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, monkeypatch: Any
) -> None:
    """A bug no check foresaw (here: storing one event raises) costs that record only."""
    await ensure_mirror_topics(settings, [TOPIC])
    marker = f"boom-{uuid.uuid4().hex}"
    real_pack = event_store.pack

    def pack(data: dict[str, Any]) -> bytes:
        if data.get("registration_id") == marker:
            raise RuntimeError("a bug in storing")
        return real_pack(data)

    monkeypatch.setattr(event_store, "pack", pack)
    before = event(tenant.id)
    poison = event(tenant.id, data={"registration_id": marker})
    after = event(tenant.id)
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await kafka.start()
        try:
            topic = settings.mirror_topic(TOPIC)
            batch = [before, poison, after]
            futures = [await kafka.send(topic, orjson.dumps(v), key=b"k") for v in batch]
            await kafka.flush()
            poison_at = await futures[1]
            wanted = {before["id"], after["id"]}
            await wait_until(lambda: wanted <= set(rx.event_ids()), 60, message="the events")
            dead = await read_dead_letters(settings, 1)
            assert not router.task.done(), "the router stopped"
        finally:
            await kafka.stop()
            await router.stop()
            await deliverer.stop()
    assert set(rx.event_ids()) == wanted
    assert headers_of(dead[0])["hooklane-source-offset"] == str(poison_at.offset)
    assert (
        "internal error: RuntimeError: a bug in storing" in headers_of(dead[0])["hooklane-reason"]
    )
