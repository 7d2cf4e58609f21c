"""The engine counts what it decides: router and deliverer in-process, real broker and Postgres.

Each service gets a metrics object on a fresh registry (``metrics=`` of its
constructor); the tests read the registry's samples, so they see exactly what
``/metrics`` would export. Dead-letter reasons are short stable categories.
"""

from __future__ import annotations

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from dispatcher.delivery.secrets import SecretBox
from dispatcher.kafka.producer import Producer
from dispatcher.messages.wire import DeliveryTask, Event, InvalidMessage
from dispatcher.ops.metrics import WEBHOOK_METRICS, DelivererMetrics, RouterMetrics, build_registry
from dispatcher.runtime.backlog_gauges import set_webhook_gauges
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import update_webhook
from tests.conftest import TenantKey
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver
from tests.test_malformed import event

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
UNKNOWN_TOPIC = "NOT.IN.THE.CATALOG"


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample of ``registry`` (0 when absent)."""
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("raw", "category"),
    [
        (b"{not json", "invalid_json"),
        (None, "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (orjson.dumps(event("t", tenant_id=None)), "missing_field"),
        (orjson.dumps(event("t", data="text")), "missing_field"),
        (orjson.dumps(event("t", triggered_at="yesterday")), "missing_field"),
        (orjson.dumps(event("t", topic="OTHER")), "topic_mismatch"),
    ],
)
def test_invalid_events_name_a_stable_category(raw: bytes | None, category: str) -> None:
    """The dead-letter label is one of a few categories, never the free-text reason."""
    with pytest.raises(InvalidMessage) as caught:
        Event.from_message(raw, expected_topic=TOPIC)
    assert caught.value.category == category


@pytest.mark.parametrize(
    ("raw", "category"),
    [
        (b"\xff", "invalid_json"),
        (b'"task"', "invalid_json"),
        (orjson.dumps({"kind": "event", "event": event("t")}), "missing_field"),
        (orjson.dumps({"webhook_id": "w", "kind": "nope", "event": event("t")}), "missing_field"),
    ],
)
def test_invalid_tasks_name_a_stable_category(raw: bytes, category: str) -> None:
    """Undecodable delivery tasks are categorised the same way."""
    with pytest.raises(InvalidMessage) as caught:
        DeliveryTask.from_message(raw)
    assert caught.value.category == category


async def test_router_counts_routed_dead_lettered_filtered_and_commits(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Routed per topic, dead letters per category, filtered pairs and commit durations."""
    await ensure_mirror_topics(settings, [TOPIC, UNKNOWN_TOPIC])
    await create_webhook(pool, settings, tenant.id, "https://example.com/all", [TOPIC])
    picky = await create_webhook(pool, settings, tenant.id, "https://example.com/big", [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)
    await update_webhook(pool, box, tenant.id, picky.id, {"filter": {"data.amount": {"$gt": 10}}})
    families = build_registry(("router",))
    router = await start_router(settings, metrics=RouterMetrics(families, "g"))
    registry = families.registry
    try:
        kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await kafka.start()
        try:
            mirror = settings.mirror_topic(TOPIC)
            for raw in (
                orjson.dumps(event(tenant.id)),
                orjson.dumps(event(tenant.id, data={"amount": 50})),
                b"{not json",
                orjson.dumps(event(tenant.id, tenant_id=None)),
            ):
                await kafka.send_and_wait(mirror, raw)
            unknown = orjson.dumps(event(tenant.id, topic=UNKNOWN_TOPIC))
            await kafka.send_and_wait(settings.mirror_topic(UNKNOWN_TOPIC), unknown)
        finally:
            await kafka.stop()

        def counted() -> bool:
            dead = "hooklane_events_dead_lettered_total"
            return (
                value(registry, "hooklane_events_routed_total", topic=TOPIC) == 2
                and value(registry, dead, reason="invalid_json") == 1
                and value(registry, dead, reason="missing_field") == 1
                and value(registry, dead, reason="unknown_topic") == 1
                and value(registry, "hooklane_commit_duration_seconds_count", group="g") > 0
            )

        await wait_until(counted, 60, 0.1, "router counters")
        # The picky webhook's filter skipped the event without an amount: one pair.
        assert value(registry, "hooklane_events_filtered_total") == 1
        assert value(registry, "hooklane_events_routed_total", topic=UNKNOWN_TOPIC) == 0
    finally:
        await router.stop()


async def test_deliverer_counts_outcomes_dead_letters_and_attempt_log_rows(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Delivered, parked and given-up deliveries once each; bad tasks; written rows; logs."""
    await ensure_mirror_topics(settings, [TOPIC])
    families = build_registry(("deliverer",), delivery_timeout_s=settings.delivery_timeout_s)
    registry = families.registry
    async with Receiver() as rx:
        rx.respond = lambda received: 503 if received.path == "/down" else 200
        up = await create_webhook(pool, settings, tenant.id, rx.url_for("up"), [TOPIC])
        down = await create_webhook(pool, settings, tenant.id, rx.url_for("down"), [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings, metrics=DelivererMetrics(families, "g"))
        try:
            with capture_logs() as logs:
                async with Producer(settings) as producer:
                    for n in range(3):
                        data = {"registration_id": f"r{n}"}
                        await producer.publish(TOPIC, data, tenant_id=tenant.id)
                kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
                await kafka.start()
                try:
                    await kafka.send_and_wait(settings.deliveries_topic, b"{not json", key=b"x")
                finally:
                    await kafka.stop()

                def counted() -> bool:
                    deliveries = "hooklane_deliveries_total"
                    return (
                        value(registry, deliveries, outcome="delivered") >= 3
                        and value(registry, deliveries, outcome="parked") >= 3
                        and value(
                            registry, "hooklane_events_dead_lettered_total", reason="invalid_json"
                        )
                        == 1
                        and value(registry, "hooklane_attempt_log_rows_total", result="written")
                        >= 6
                        and value(registry, "hooklane_commit_duration_seconds_count", group="g") > 0
                    )

                await wait_until(counted, 60, 0.1, "deliverer counters")
            assert value(registry, "hooklane_deliveries_total", outcome="gave_up") == 0
            assert value(registry, "hooklane_attempt_log_rows_total", result="dropped") == 0
            # Attempts are the sender's: every delivered one is one successful attempt.
            assert value(registry, "hooklane_attempts_total", outcome="success") >= 3
        finally:
            await deliverer.stop()
            await router.stop()
    correlation = {"event_id", "webhook_id", "tenant_id", "attempt"}
    succeeded = [line for line in logs if line["event"] == "delivery.succeeded"]
    failed = [line for line in logs if line["event"] == "delivery.failed"]
    assert {line["webhook_id"] for line in succeeded} == {up.id}
    assert {line["webhook_id"] for line in failed} == {down.id}
    for line in succeeded + failed:
        assert correlation <= set(line) and line["tenant_id"] == tenant.id


def test_webhook_gauges_are_opt_in() -> None:
    """Without HOOKLANE_METRICS_WEBHOOK_LABELS no metric has a webhook_id label."""
    names = {spec.full_name for spec in WEBHOOK_METRICS}
    for labels, expected in ((False, set()), (True, names)):
        registry = build_registry(("deliverer",), webhook_labels=labels).registry
        assert {metric.name for metric in registry.collect()} & names == expected


async def test_webhook_gauges_keep_only_the_top_webhooks(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """The largest backlogs and the longest failing, ``top`` each; the rest are cleared."""
    hooks = [
        (await create_webhook(pool, settings, tenant.id, f"https://x.example/{n}", [TOPIC])).id
        for n in range(3)
    ]
    for webhook_id, rows, days in zip(hooks, (3000, 2000, 1), (3000, 2000, 1), strict=True):
        await pool.execute(
            "INSERT INTO parked_webhooks (webhook_id, failing_since, next_attempt_at)"
            " VALUES ($1::uuid, now(), now() + interval '1 hour')",
            webhook_id,
        )
        await pool.execute(
            "INSERT INTO backlog (webhook_id, event_id, task)"
            " SELECT $1::uuid, 'evt_' || n, '{}'::jsonb FROM generate_series(1, $2) AS n",
            webhook_id,
            rows,
        )
        await pool.execute(
            "UPDATE webhooks SET failing_since = now() - make_interval(days => $2),"
            " consecutive_failures = $2 WHERE id = $1::uuid",
            webhook_id,
            days,
        )
    try:
        await check_top_gauges(pool, hooks)
    finally:  # failing for 3000 days: not something the other tests' views expect
        await pool.execute("DELETE FROM backlog WHERE webhook_id = ANY($1::uuid[])", hooks)
        await pool.execute("DELETE FROM parked_webhooks WHERE webhook_id = ANY($1::uuid[])", hooks)
        await pool.execute("DELETE FROM webhooks WHERE id = ANY($1::uuid[])", hooks)


async def check_top_gauges(pool: asyncpg.Pool, hooks: list[str]) -> None:
    """Refresh the gauges on ``hooks`` (backlogs 3000/2000/1, failing 3000/2000/1 days)."""
    families = build_registry(("deliverer",), webhook_labels=True)
    backlog, failures = (
        families.gauge("webhook_backlog_deliveries"),
        families.gauge("webhook_consecutive_failures"),
    )

    def series(name: str) -> dict[str, float]:
        return {
            sample.labels["webhook_id"]: sample.value
            for metric in families.registry.collect()
            if metric.name == name
            for sample in metric.samples
        }

    await set_webhook_gauges(pool, backlog, failures, top=2)
    top_two = {hooks[0]: 3000.0, hooks[1]: 2000.0}
    assert series("hooklane_webhook_backlog_deliveries") == top_two
    assert series("hooklane_webhook_consecutive_failures") == top_two
    # The first drains its backlog, the second recovers: both leave a top.
    await pool.execute("DELETE FROM backlog WHERE webhook_id = ANY($1::uuid[])", hooks[:2])
    await pool.execute(
        "UPDATE webhooks SET failing_since = NULL, consecutive_failures = 0 WHERE id = $1::uuid",
        hooks[1],
    )
    await set_webhook_gauges(pool, backlog, failures, top=2)
    # Other tests' webhooks (same database) may fill the tops now; ours must have left.
    shown = series("hooklane_webhook_backlog_deliveries")
    assert len(shown) <= 2 and not set(hooks[:2]) & set(shown)
    shown = series("hooklane_webhook_consecutive_failures")
    assert len(shown) == 2 and shown[hooks[0]] == 3000.0 and hooks[1] not in shown
