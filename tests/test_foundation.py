"""Smoke tests of the real parts: the tansu broker and Postgres."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from dispatcher.kafka.broker import EmbeddedBroker
from dispatcher.kafka.topic_admin import ensure_topics
from dispatcher.settings import Settings
from dispatcher.store import db
from tests.conftest import database_url_for


async def test_broker_produce_consume_commit(settings: Settings) -> None:
    """Messages go through the real broker; a consumer group commits offsets that stick."""
    assert settings.kafka_bootstrap_servers
    topic = settings.mirror_topic("SMOKE")
    await ensure_topics(settings, {topic: 2})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=i % 2)
    finally:
        await producer.stop()

    group = f"smoke-{uuid.uuid4().hex[:6]}"

    async def consume_all() -> tuple[list[bytes], dict[TopicPartition, int]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        seen: list[bytes] = []
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while len(seen) < 10 and asyncio.get_running_loop().time() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    seen.extend(m.value for m in messages if m.value is not None)
            await consumer.commit()
            committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
        finally:
            await consumer.stop()
        return seen, committed

    seen, committed = await consume_all()
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(10))
    assert committed == {TopicPartition(topic, 0): 5, TopicPartition(topic, 1): 5}

    # The same group resumes after the committed offsets: nothing is read again.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        again = await consumer.getmany(timeout_ms=1500)
    finally:
        await consumer.stop()
    assert sum(len(m) for m in again.values()) == 0


async def test_postgres_round_trip(pool: asyncpg.Pool) -> None:
    """Rows, including JSON decoded by orjson, round-trip through the real Postgres."""
    name = f"SMOKE.{uuid.uuid4().hex[:6].upper()}"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    await pool.execute(
        "INSERT INTO topics (name, description, schema) VALUES ($1, $2, $3)", name, "smoke", schema
    )
    row = await pool.fetchrow("SELECT description, schema FROM topics WHERE name = $1", name)
    assert row is not None
    assert row["description"] == "smoke"
    assert row["schema"] == schema


async def test_migrations_are_idempotent(database_url: str) -> None:
    """Running migrate again applies nothing and keeps the seeded catalog."""
    assert await db.migrate(database_url) == []
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM topics WHERE name = 'REGISTRATIONS.NEW.SUCCEEDED'"
        )
    finally:
        await conn.close()
    assert count == 1


async def test_migrate_creates_missing_database() -> None:
    """migrate creates the database named in the URL when it does not exist."""
    url = database_url_for(f"hooklane_new_{uuid.uuid4().hex[:8]}")
    try:
        applied = await db.migrate(url)
        assert applied and applied[0] == "001_initial.sql"
    finally:
        await db.drop_database(url)


def test_broker_stops_cleanly() -> None:
    """stop() ends the tansu process and frees its port."""
    broker = EmbeddedBroker()
    broker.start()
    pid = broker.pid
    assert pid is not None
    broker.stop()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
