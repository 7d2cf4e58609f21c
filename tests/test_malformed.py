"""Malformed input never stops the pipeline: bad Kafka messages go to the dead-letter topic
with the reason, bad delivery tasks are skipped, and later good events still deliver.

Messages are written raw with a plain aiokafka producer (``dispatcher.kafka.producer`` only
writes valid events) to the real broker; the router and deliverer run in-process.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dispatcher.kafka.producer import Producer
from dispatcher.messages.wire import DeliveryTask, Event
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
OTHER_TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"


def event(owner: str, **overrides: Any) -> dict[str, Any]:
    """A valid event message of tenant ``owner``; ``overrides`` replace fields (None removes)."""
    value: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "topic": TOPIC,
        "tenant_id": owner,
        "triggered_at": 1700000000,
        "data": {"registration_id": "reg_1"},
    }
    for name, replacement in overrides.items():
        if replacement is None:
            value.pop(name)
        else:
            value[name] = replacement
    return value


def malformed_events(tenant_id: str) -> list[tuple[str, bytes | None, str]]:
    """(case, raw value, expected reason fragment) for every kind of bad event message."""
    dumps = orjson.dumps
    return [
        ("not JSON", b"{not json", "not valid JSON"),
        ("empty value", b"", "not valid JSON"),
        ("tombstone", None, "no value"),
        ("invalid UTF-8", b"\xff\xfe\xfd", "not valid JSON"),
        ("JSON array", b"[1, 2, 3]", "not a JSON object"),
        ("JSON string", b'"hello"', "not a JSON object"),
        ("missing tenant_id", dumps(event(tenant_id, tenant_id=None)), "tenant_id"),
        ("numeric tenant_id", dumps(event(tenant_id, tenant_id=42)), "tenant_id"),
        ("empty tenant_id", dumps(event(tenant_id, tenant_id="")), "tenant_id"),
        ("missing data", dumps(event(tenant_id, data=None)), "data"),
        ("data is a string", dumps(event(tenant_id, data="text")), "data"),
        ("missing id", dumps(event(tenant_id, id=None)), "id"),
        ("huge id", dumps(event(tenant_id, id="x" * 100_000)), "id"),
        ("topic mismatch", dumps(event(tenant_id, topic=OTHER_TOPIC)), "does not match"),
        ("triggered_at text", dumps(event(tenant_id, triggered_at="yesterday")), "triggered_at"),
        ("triggered_at bool", dumps(event(tenant_id, triggered_at=True)), "triggered_at"),
        ("triggered_at 1e400", _with_number(tenant_id, "1e400"), "not valid JSON"),
        ("triggered_at 1e300", _with_number(tenant_id, "1e300"), "triggered_at"),
        ("triggered_at 2**70", _with_number(tenant_id, str(2**70)), "triggered_at"),
        ("nested 5000 deep", b'{"data":' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON"),
    ]


def _with_number(tenant_id: str, number: str) -> bytes:
    """An otherwise valid event whose triggered_at is the literal ``number``."""
    return orjson.dumps(event(tenant_id, triggered_at=0)).replace(
        b'"triggered_at":0', b'"triggered_at":' + number.encode()
    )


async def read_dead_letters(settings: Settings, count: int, within: float = 60) -> list[Any]:
    """The first ``count`` records of the dead-letter topic (waits for them)."""
    consumer = AIOKafkaConsumer(
        settings.dead_letter_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
            return len(records) >= count

        await wait_until(enough, within, message=f"{count} dead letters")
    finally:
        await consumer.stop()
    return records


async def test_malformed_events_are_dead_lettered_and_good_ones_still_deliver(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Every bad event lands in the dead-letter topic with its reason; good ones deliver."""
    await ensure_mirror_topics(settings, [TOPIC, OTHER_TOPIC])
    cases = malformed_events(tenant.id)
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await kafka.start()
        try:
            good_before = event(tenant.id)
            await kafka.send_and_wait(settings.mirror_topic(TOPIC), orjson.dumps(good_before))
            origins = []  # (partition, offset) of each bad message
            for _, raw, _ in cases:
                sent = await kafka.send_and_wait(
                    settings.mirror_topic(TOPIC), raw, key=tenant.id.encode()
                )
                origins.append((str(sent.partition), str(sent.offset)))
            good_after = [event(tenant.id) for _ in range(3)]
            for value in good_after:
                await kafka.send_and_wait(settings.mirror_topic(TOPIC), orjson.dumps(value))
            wanted = {good_before["id"], *(value["id"] for value in good_after)}
            await wait_until(lambda: wanted <= set(rx.event_ids()), 60, message="the good events")
            dead = await read_dead_letters(settings, len(cases))
            assert not router.task.done(), "the router stopped"
            assert not deliverer.task.done(), "the deliverer stopped"
        finally:
            await kafka.stop()
            await router.stop()
            await deliverer.stop()

    assert len(dead) == len(cases)
    by_origin = {}
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        origin = (headers["hooklane-source-partition"], headers["hooklane-source-offset"])
        by_origin[origin] = (record.value, headers)
    for (case, raw, reason), origin in zip(cases, origins, strict=True):
        assert origin in by_origin, f"{case}: not dead-lettered"
        value, headers = by_origin[origin]
        assert reason in headers["hooklane-reason"], case
        assert headers["hooklane-source-topic"] == settings.mirror_topic(TOPIC)
        assert (value or b"") == (raw or b""), f"{case}: the original value is kept"
    # Nothing malformed was delivered.
    assert set(rx.event_ids()) == wanted


async def test_unknown_topic_is_dead_lettered(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A well-formed event on a mirror topic outside the catalog is dead-lettered."""
    unknown = f"NOT.IN.CATALOG.{uuid.uuid4().hex[:6].upper()}"
    await ensure_mirror_topics(settings, [unknown])
    router = await start_router(settings)
    try:
        async with Producer(settings) as producer:
            await producer.publish(unknown, {"x": 1}, tenant_id=tenant.id)
        dead = await read_dead_letters(settings, 1, within=15)
    finally:
        await router.stop()
    assert "topic" in dict(dead[0].headers)["hooklane-reason"].decode()


async def test_malformed_delivery_tasks_do_not_stop_the_deliverer(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Bad deliveries-topic messages are dead-lettered with a reason; delivery goes on."""
    await ensure_mirror_topics(settings, [TOPIC])
    async with Receiver() as rx:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        deliverer = await start_deliverer(settings)
        kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await kafka.start()
        good = Event(str(uuid.uuid4()), TOPIC, tenant.id, 1700000000, {"registration_id": "r"})
        key = hook.id.encode()
        bad_tasks: list[bytes | None] = [
            b"not json",
            None,
            b"[]",
            orjson.dumps({"webhook_id": hook.id, "kind": "nonsense", "event": good.to_dict()}),
            orjson.dumps({"webhook_id": hook.id, "event": {"id": "x"}}),
            orjson.dumps({"event": good.to_dict()}),
            DeliveryTask(str(uuid.uuid4()), good).to_message(),  # no such webhook
        ]
        try:
            for raw in bad_tasks:
                await kafka.send_and_wait(settings.deliveries_topic, raw, key=key)
            await kafka.send_and_wait(
                settings.deliveries_topic, DeliveryTask(hook.id, good).to_message(), key=key
            )
            await wait_until(lambda: good.id in rx.event_ids(), 60, message="the good task")
            assert not deliverer.task.done(), "the deliverer stopped"
            # The task for a webhook that does not exist is valid: finished, not dead.
            dead = await read_dead_letters(settings, len(bad_tasks) - 1)
        finally:
            await kafka.stop()
            await deliverer.stop()
    assert rx.event_ids() == [good.id]
    assert len(dead) == len(bad_tasks) - 1
    for letter in dead:
        headers = dict(letter.headers)
        assert headers["hooklane-reason"]
        assert headers["hooklane-source-topic"].decode() == settings.deliveries_topic
    assert sorted(letter.value for letter in dead) == sorted(raw or b"" for raw in bad_tasks[:-1])
