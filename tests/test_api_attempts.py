"""The attempt log API and redelivery (retry one attempt, recover failed deliveries)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from dispatcher.deliverer.attempt_log import AttemptLog
from dispatcher.messages.wire import DeliveryTask
from dispatcher.settings import Settings
from dispatcher.store import failed_deliveries
from dispatcher.store.attempt_store import record_one
from tests.support.api import api_client, assert_matches
from tests.support.failure import make_result, make_task, make_webhook

T0 = 1_700_000_000.0


async def deliveries(settings: Settings, count: int) -> list[DeliveryTask]:
    """The first ``count`` tasks on the deliveries topic (all partitions)."""
    consumer = AIOKafkaConsumer(
        settings.deliveries_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    tasks: list[DeliveryTask] = []
    try:
        async with asyncio.timeout(60):
            while len(tasks) < count:
                message = await consumer.getone()
                tasks.append(DeliveryTask.from_message(message.value))
    finally:
        await consumer.stop()
    return tasks


async def test_list_attempts_pages_and_filters(settings, pool, tenant) -> None:
    """Newest first in the documented shape, filtered by outcome, paged with next_cursor."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool)
    for i in range(5):
        status = 200 if i % 2 else 503
        log.record(make_result(webhook_id, tenant.id, status=status, event_id=f"e{i}", at=T0 + i))
    await log.flush()
    async with api_client(settings) as client:
        url = f"/webhooks/{webhook_id}/attempts"
        first = await client.get(url, params={"limit": "3"}, headers=tenant.headers)
        assert first.status == 200
        page = await first.json()
        assert_matches("AttemptList", page)
        assert [a["event_id"] for a in page["data"]] == ["e4", "e3", "e2"]
        second = await client.get(
            url, params={"limit": "3", "cursor": page["next_cursor"]}, headers=tenant.headers
        )
        rest = await second.json()
        assert [a["event_id"] for a in rest["data"]] == ["e1", "e0"]
        assert rest["next_cursor"] is None

        failed = await (
            await client.get(url, params={"outcome": "failure"}, headers=tenant.headers)
        ).json()
        assert [a["event_id"] for a in failed["data"]] == ["e4", "e2", "e0"]
        assert failed["data"][0]["status_code"] == 503
        assert failed["data"][0]["error"] == "HTTP 503"
        assert failed["data"][0]["error_class"] == "HTTPStatus"


async def test_attempts_carry_response_headers(settings, pool, tenant) -> None:
    """An attempt's recorded response headers come back as name/value pairs, in order."""
    webhook_id = await make_webhook(pool, tenant.id)
    result = dataclasses.replace(
        make_result(webhook_id, tenant.id, status=429),
        response_headers=(("Retry-After", "30"), ("X-Request-Id", "r-9")),
    )
    await record_one(pool, result)
    async with api_client(settings) as client:
        response = await client.get(f"/webhooks/{webhook_id}/attempts", headers=tenant.headers)
        page = await response.json()
    assert_matches("AttemptList", page)
    assert page["data"][0]["response_headers"] == [
        {"name": "Retry-After", "value": "30"},
        {"name": "X-Request-Id", "value": "r-9"},
    ]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"limit": "0"}, 422, "validation_failed"),
        ({"limit": "101"}, 422, "validation_failed"),
        ({"limit": "x"}, 422, "validation_failed"),
        ({"outcome": "maybe"}, 422, "validation_failed"),
        ({"cursor": "not-a-cursor"}, 400, "invalid_cursor"),
    ],
)
async def test_list_attempts_rejects_bad_parameters(settings, pool, tenant, params, status, code):
    """Bad limit or outcome is a 422, a foreign cursor a 400 — never a 500."""
    webhook_id = await make_webhook(pool, tenant.id)
    async with api_client(settings) as client:
        response = await client.get(
            f"/webhooks/{webhook_id}/attempts", params=params, headers=tenant.headers
        )
        assert response.status == status
        assert (await response.json())["error"]["code"] == code


async def test_other_tenants_get_404(settings, pool, tenant, other_tenant) -> None:
    """Another tenant's webhook (and its attempts) answer 404 on every route; the owner's work."""
    webhook_id = await make_webhook(pool, tenant.id)
    attempt_id = await record_one(pool, make_result(webhook_id, tenant.id))
    routes = [
        ("GET", f"/webhooks/{webhook_id}/attempts", None),
        ("POST", f"/webhooks/{webhook_id}/attempts/{attempt_id}/retry", None),
        ("POST", f"/webhooks/{webhook_id}/recover", {"since": "2020-01-01T00:00:00Z"}),
    ]
    async with api_client(settings) as client:
        for method, url, body in routes:
            response = await client.request(method, url, json=body, headers=other_tenant.headers)
            assert response.status == 404, url
            assert (await response.json())["error"]["code"] == "not_found"
        owner = await client.get(routes[0][1], headers=tenant.headers)
        assert owner.status == 200
        missing = await client.post(
            f"/webhooks/{webhook_id}/attempts/999999999/retry", headers=tenant.headers
        )
        assert missing.status == 404


async def test_retry_attempt_requeues_its_event(settings, internal_topics, pool, tenant) -> None:
    """Retrying a failed delivery's attempt writes a redelivery task of that event to Kafka."""
    webhook_id = await make_webhook(pool, tenant.id)
    task = make_task(webhook_id, tenant.id, 7)
    result = make_result(webhook_id, tenant.id, status=500, event_id=task.event.id)
    attempt_id = await record_one(pool, result)
    await failed_deliveries.record_failed(pool, task, tenant.id, "retry window exceeded")
    delivered = await record_one(pool, make_result(webhook_id, tenant.id, event_id="gone"))
    async with api_client(settings) as client:
        response = await client.post(
            f"/webhooks/{webhook_id}/attempts/{attempt_id}/retry", headers=tenant.headers
        )
        assert response.status == 202
        body = await response.json()
        assert_matches("RetryAccepted", body)
        assert body == {"event_id": task.event.id, "queued": True}
        not_stored = await client.post(
            f"/webhooks/{webhook_id}/attempts/{delivered}/retry", headers=tenant.headers
        )
        assert not_stored.status == 404
        assert (await not_stored.json())["error"]["code"] == "event_not_stored"
    [queued] = await deliveries(settings, 1)
    assert queued == DeliveryTask(webhook_id, task.event, "redelivery")


async def test_recover_requeues_failed_since_in_order(
    settings, internal_topics, pool, tenant
) -> None:
    """recover re-enqueues failed deliveries since the time, oldest first, and forgets them."""
    webhook_id = await make_webhook(pool, tenant.id)
    old, *recent = [make_task(webhook_id, tenant.id, n) for n in range(4)]
    await failed_deliveries.record_failed(pool, old, tenant.id, "old")
    await pool.execute(
        "UPDATE failed_deliveries SET failed_at = now() - interval '2 days' WHERE event_id = $1",
        old.event.id,
    )
    for task in recent:
        await failed_deliveries.record_failed(pool, task, tenant.id, "window")
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    async with api_client(settings) as client:
        url = f"/webhooks/{webhook_id}/recover"
        response = await client.post(url, json={"since": since}, headers=tenant.headers)
        assert response.status == 202
        body = await response.json()
        assert_matches("RecoverAccepted", body)
        assert body == {"queued": 3}
        again = await client.post(url, json={"since": since}, headers=tenant.headers)
        assert await again.json() == {"queued": 0}
        for bad in ({"since": "yesterday"}, {"since": "2026-01-01T00:00:00"}, {}):
            rejected = await client.post(url, json=bad, headers=tenant.headers)
            assert rejected.status == 422, bad
    queued = await deliveries(settings, 3)
    assert [t.event.data["n"] for t in queued] == [1, 2, 3]
    assert {t.kind for t in queued} == {"redelivery"}
    left = await pool.fetch(
        "SELECT event_id FROM failed_deliveries WHERE webhook_id = $1", webhook_id
    )
    assert [r["event_id"] for r in left] == [old.event.id]


async def test_concurrent_recovers_send_each_delivery_once(
    settings, internal_topics, pool, tenant
) -> None:
    """Two recover calls at once split the failed deliveries: together they queue each once."""
    webhook_id = await make_webhook(pool, tenant.id)
    for n in range(6):
        await failed_deliveries.record_failed(
            pool, make_task(webhook_id, tenant.id, n), tenant.id, "x"
        )
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    async with api_client(settings) as client:
        url = f"/webhooks/{webhook_id}/recover"
        responses = await asyncio.gather(
            *(client.post(url, json={"since": since}, headers=tenant.headers) for _ in range(2))
        )
        counts = [(await r.json())["queued"] for r in responses]
    assert sum(counts) == 6
    queued = await deliveries(settings, 6)
    assert sorted(t.event.data["n"] for t in queued) == list(range(6))
