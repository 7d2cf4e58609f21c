"""The router: mirror-topic pattern, subscription index, dead letters, live subscription changes."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dispatcher.delivery.secrets import SecretBox
from dispatcher.router.router import mirror_pattern
from dispatcher.router.subscription_index import Subscriptions
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import update_webhook
from tests.conftest import TenantKey
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


@pytest.mark.parametrize(
    ("topic", "matches"),
    [
        ("hooklane.REGISTRATIONS.NEW.SUCCEEDED", True),
        ("hooklane.deliveries.X", True),  # only the exact internal names are excluded
        ("hooklane.deliveries", False),
        ("hooklane.dead-letter", False),
        ("hooklane.", False),
        ("hooklaneXREGISTRATIONS", False),  # the prefix's dot is literal
        ("other.REGISTRATIONS.NEW.SUCCEEDED", False),
    ],
)
def test_mirror_pattern_matches_mirror_topics_only(topic: str, matches: bool) -> None:
    """The router's pattern takes every mirror topic of its prefix and no internal topic."""
    pattern = re.compile(mirror_pattern("hooklane."))
    assert bool(pattern.fullmatch(topic)) is matches


def test_subscriptions_index_put_remove_and_replace() -> None:
    """The index answers (tenant, topic) lookups and forgets removed or replaced webhooks."""
    index = Subscriptions()
    index.put("w1", "t1", ["A", "B"])
    index.put("w2", "t1", ["A"])
    index.put("w3", "t2", ["A"])
    assert list(index.lookup("t1", "A")) == ["w1", "w2"]
    assert list(index.lookup("t1", "B")) == ["w1"]
    assert list(index.lookup("t2", "B")) == []
    index.put("w1", "t1", ["B"])  # topics changed
    assert list(index.lookup("t1", "A")) == ["w2"]
    index.remove("w2")
    index.remove("unknown")
    assert list(index.lookup("t1", "A")) == []
    index.replace_all([("w9", "t9", ["Z", "Z"], None)])
    assert list(index.lookup("t9", "Z")) == ["w9"]
    assert list(index.lookup("t1", "B")) == []
    assert len(index) == 1


async def test_malformed_messages_go_to_dead_letter_with_reason_and_routing_continues(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Invalid values land in the dead-letter topic with their reason; valid ones still route."""
    await ensure_mirror_topics(settings, [TOPIC])
    assert settings.kafka_bootstrap_servers
    topic = settings.mirror_topic(TOPIC)
    bad = [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"id": "e1", "topic": TOPIC, "triggered_at": 1, "data": {}}),  # no tenant
        orjson.dumps(
            {"id": "e2", "topic": "OTHER", "tenant_id": tenant.id, "triggered_at": 1, "data": {}}
        ),
    ]
    good = orjson.dumps(
        {"id": "ok-1", "topic": TOPIC, "tenant_id": tenant.id, "triggered_at": 1, "data": {}}
    )
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for value in [*bad, good]:
                await producer.send_and_wait(topic, value, key=b"k")
            await wait_until(lambda: len(rx.requests) >= 1)
        finally:
            await producer.stop()
            await deliverer.stop()
            await router.stop()
    assert rx.event_ids() == ["ok-1"]

    consumer = AIOKafkaConsumer(
        settings.dead_letter_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        letters: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(letters) < len(bad) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                letters.extend(records)
    finally:
        await consumer.stop()
    assert [letter.value for letter in letters] == bad
    headers = [dict(letter.headers) for letter in letters]
    assert all(h["hooklane-source-topic"] == topic.encode() for h in headers)
    reasons = [h["hooklane-reason"].decode() for h in headers]
    assert "not valid JSON" in reasons[0]
    assert "not a JSON object" in reasons[1]
    assert "tenant_id" in reasons[2]
    assert "does not match" in reasons[3]


async def test_subscription_created_or_disabled_takes_effect_within_a_second(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A new webhook gets the next event, and a disabled one stops, one second after the change."""
    from dispatcher.kafka.producer import Producer

    await ensure_mirror_topics(settings, [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)
    async with Receiver() as rx:
        first = await create_webhook(pool, settings, tenant.id, rx.url_for("first"), [TOPIC])
        async with running(settings), Producer(settings) as producer:
            before = await producer.publish(TOPIC, {"n": 1}, tenant.id)
            await wait_until(lambda: len(rx.on("first")) == 1)

            await create_webhook(pool, settings, tenant.id, rx.url_for("second"), [TOPIC])
            await update_webhook(pool, box, tenant.id, first.id, {"state": "DISABLED"})
            await asyncio.sleep(1.0)  # the contract: effective within a second
            after = await producer.publish(TOPIC, {"n": 2}, tenant.id)
            await wait_until(lambda: len(rx.on("second")) >= 1)
            # a marker through the same path proves the disabled webhook had its chance
            await update_webhook(pool, box, tenant.id, first.id, {"state": "ENABLED"})
            await asyncio.sleep(1.0)
            marker = await producer.publish(TOPIC, {"n": 3}, tenant.id)
            await wait_until(lambda: len(rx.on("first")) >= 2)
    assert rx.event_ids("first") == [before, marker]
    assert rx.event_ids("second") == [after, marker]


async def test_index_resyncs_after_losing_its_listener_connection(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A change made while the LISTEN connection is down is picked up once it reconnects."""
    from dispatcher.router.subscription_index import SubscriptionIndex

    index = SubscriptionIndex(settings.database_url)
    await index.start()
    try:
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%hooklane_webhooks%'"
        )
        assert killed >= 1
        webhook = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/x", [TOPIC])
        await wait_until(lambda: webhook.id in index.lookup(tenant.id, TOPIC), within=15)
    finally:
        await index.stop()


async def test_router_module_runs_and_exits_cleanly_on_sigterm(settings: Settings) -> None:
    """``python -m dispatcher.router`` (what the supervisor spawns) stops with code 0 on SIGTERM."""
    from tests.support.pipeline import spawn

    await ensure_mirror_topics(settings, [TOPIC])
    router = await spawn("dispatcher.router", settings.replace(log_level="INFO"), capture_logs=True)

    def started() -> bool:
        return any(line.get("event") == "router.started" for line in router.logs)

    await wait_until(started, 60, message="the router to start")
    assert router.process.returncode is None, router.logs[-5:]
    assert await router.terminate() == 0


async def test_a_router_stopped_while_starting_exits_cleanly(settings: Settings) -> None:
    """SIGTERM during start-up (a pod stopped early) is a clean exit, code 0."""
    from tests.support.pipeline import spawn

    router = await spawn("dispatcher.router", settings.replace(log_level="INFO"), capture_logs=True)

    def connecting() -> bool:  # its ops endpoints are up: past imports, before the group
        return any(line.get("event") == "ops.listening" for line in router.logs)

    await wait_until(connecting, 60, message="the router's ops server")
    assert await router.terminate() == 0


async def test_topic_catalog_check_learns_new_topics(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Unknown topics are refused until added to the catalog; then accepted within the TTL."""
    from dispatcher.router.subscription_index import UNKNOWN_TOPIC_TTL_S, SubscriptionIndex
    from dispatcher.store.topic_store import add_topic

    now = [time.monotonic()]
    index = SubscriptionIndex(settings.database_url, clock=lambda: now[0])
    await index.start()
    name = f"LATE.TOPIC.{settings.topic_prefix.strip('.').upper()}"
    try:
        assert await index.topic_known(TOPIC)  # seeded catalog, loaded at start
        assert not await index.topic_known(name)
        await add_topic(pool, name, "added while running", {"type": "object"})
        now[0] += UNKNOWN_TOPIC_TTL_S  # the unknown answer expires
        assert await index.topic_known(name)
    finally:
        await index.stop()
        await pool.execute("DELETE FROM topics WHERE name = $1", name)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("25", 25), ("1", 1), ("10000", 10_000), ("0", None), ("10001", None), ("soon", None)],
)
def test_fetch_max_wait_setting(raw: str, expected: int | None) -> None:
    """HOOKLANE_FETCH_MAX_WAIT_MS takes 1-10000 milliseconds; anything else is refused."""
    from dispatcher.settings import SettingsError

    env = {"HOOKLANE_FETCH_MAX_WAIT_MS": raw}
    if expected is None:
        with pytest.raises(SettingsError, match="FETCH_MAX_WAIT_MS"):
            Settings.from_env(env)
    else:
        assert Settings.from_env(env).fetch_max_wait_ms == expected


def test_settings_env_round_trips_for_subprocesses(settings: Settings) -> None:
    """The helpers' environment reproduces the test settings in a child process."""
    from tests.support.pipeline import settings_env

    assert Settings.from_env(settings_env(settings)).replace(log_format="console") == settings
