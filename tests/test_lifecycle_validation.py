"""One validation rule: Kafka events are checked against their topic's schema like POST /events."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dispatcher.messages.topic_schemas import ValidatorCache, describe
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
SCHEMA = {
    "type": "object",
    "properties": {"registration_id": {"type": "string"}},
    "required": ["registration_id"],
}


@pytest.mark.parametrize(
    ("data", "paths"),
    [
        ({"registration_id": "r1"}, []),
        ({}, ["/data"]),
        ({"registration_id": 7}, ["/data/registration_id"]),
    ],
)
def test_data_problems_point_into_data(data, paths):
    """Problems name their place under /data, the same for the API's 422 and the dead letter."""
    found = ValidatorCache().data_problems(TOPIC, SCHEMA, data)
    assert [problem["path"] for problem in found] == paths


def test_a_changed_schema_is_compiled_again():
    """The cache keeps one validator per topic until the topic's schema changes."""
    cache = ValidatorCache()
    first = cache.validator(TOPIC, SCHEMA)
    assert cache.validator(TOPIC, dict(SCHEMA)) is first
    stricter = {**SCHEMA, "additionalProperties": False}
    assert cache.validator(TOPIC, stricter) is not first
    assert cache.data_problems(TOPIC, stricter, {"registration_id": "r", "x": 1})


def test_the_dead_letter_reason_names_the_topic_and_problems():
    """The reason is one line: the topic and each problem's path and message."""
    found = ValidatorCache().data_problems(TOPIC, SCHEMA, {})
    reason = describe(TOPIC, found)
    assert reason.startswith(f"data does not match the schema of {TOPIC}: /data: ")
    assert "registration_id" in reason


def message(tenant_id: str, event_id: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"id": event_id, "topic": TOPIC, "tenant_id": tenant_id, "triggered_at": 1, "data": data}
    )


async def dead_letters(settings: Settings, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        settings.dead_letter_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    letters: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(letters) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    letters.extend(records)
    finally:
        await consumer.stop()
    return letters


async def send_and_deliver(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, values: list[bytes], wait_for: str
) -> Receiver:
    await ensure_mirror_topics(settings, [TOPIC])
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(settings.mirror_topic(TOPIC), value, key=b"k")
            await wait_until(lambda: wait_for in rx.event_ids())
        finally:
            await producer.stop()
            await deliverer.stop()
            await router.stop()
    return rx


async def test_an_event_violating_its_schema_is_dead_lettered_and_the_next_is_delivered(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Invalid data is dead-lettered with the schema error; the valid event after it arrives."""
    settings = settings.replace(validate_events=True)
    invalid = message(tenant.id, "bad-1", {"registration_id": 42})
    valid = message(tenant.id, "good-1", {"registration_id": "reg_1"})
    rx = await send_and_deliver(settings, pool, tenant, [invalid, valid], "good-1")
    assert rx.event_ids() == ["good-1"]
    [letter] = await dead_letters(settings, 1)
    assert letter.value == invalid
    reason = dict(letter.headers)["hooklane-reason"].decode()
    assert reason.startswith(f"data does not match the schema of {TOPIC}")
    assert "/data/registration_id" in reason and "is not of type 'string'" in reason


async def test_with_validation_off_the_event_is_delivered_as_is(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """HOOKLANE_VALIDATE_EVENTS=false routes data the schema would refuse."""
    settings = settings.replace(validate_events=False)
    rx = await send_and_deliver(
        settings, pool, tenant, [message(tenant.id, "free-1", {"anything": True})], "free-1"
    )
    assert rx.on("hook")[0].json()["data"] == {"anything": True}
