"""Replay from the payload store: retry of a delivered attempt, and a time window sent again."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.api import Client, api_client, assert_matches
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
OTHER_TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"


async def attempts_of(client: Client, tenant: TenantKey, webhook_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/webhooks/{webhook_id}/attempts", headers=tenant.headers)
    assert response.status == 200
    return list((await response.json())["data"])


async def test_retry_of_a_delivered_attempt_sends_the_same_body_again(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A delivered attempt's retry is the same body and webhook-id with a new webhook-timestamp."""
    await ensure_mirror_topics(settings, [TOPIC])
    clock = MovableClock()
    async with Receiver() as rx, api_client(settings) as client:
        webhook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings, clock=clock)
        try:
            async with Producer(settings) as producer:
                await producer.publish(TOPIC, {"registration_id": "reg_7"}, tenant.id)
            await wait_until(lambda: len(rx.requests) == 1)
            found: list[dict[str, Any]] = []

            async def logged() -> bool:
                found[:] = await attempts_of(client, tenant, webhook.id)
                return bool(found)

            await wait_until(logged, message="the attempt in the log")
            assert found[0]["outcome"] == "success"
            clock.ahead += 10.0  # the retry is signed ten seconds later
            response = await client.post(
                f"/webhooks/{webhook.id}/attempts/{found[0]['id']}/retry", headers=tenant.headers
            )
            assert response.status == 202
            await wait_until(lambda: len(rx.requests) == 2)
        finally:
            await deliverer.stop()
            await router.stop()
    first, again = rx.requests
    assert again.body == first.body
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert int(again.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"]) + 10


@dataclass
class MovableClock:
    """The wall clock, ``ahead`` seconds later: the deliverer's clock, moved by the test."""

    ahead: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


async def replay(
    client: Client, tenant: TenantKey, webhook_id: str, body: dict[str, Any], key: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {**tenant.headers, **({"Idempotency-Key": key} if key else {})}
    response = await client.post(f"/webhooks/{webhook_id}/replay", json=body, headers=headers)
    return response.status, await response.json()


async def test_a_replay_resends_exactly_the_events_of_its_window_in_order(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A 10-minute window re-sends its events (not those around it) in routed order, once per id."""
    await ensure_mirror_topics(settings, [TOPIC, OTHER_TOPIC])
    base = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    async with Receiver() as rx, api_client(settings) as client:
        webhook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC, OTHER_TOPIC])
        async with running(settings):
            async with Producer(settings) as producer:
                ids = [
                    await producer.publish(TOPIC, {"registration_id": f"r{n}"}, tenant.id)
                    for n in range(6)
                ]
            await wait_until(lambda: len(rx.requests) == 6)
            # Spread the six events four minutes apart, as if routed over twenty minutes.
            for n, event_id in enumerate(ids):
                await pool.execute(
                    "UPDATE events SET routed_at = $3 WHERE tenant_id = $1 AND event_id = $2",
                    tenant.id,
                    event_id,
                    base + timedelta(minutes=4 * n),
                )
            window = {
                "since": (base + timedelta(minutes=4)).isoformat(),
                "until": int((base + timedelta(minutes=14)).timestamp()),
            }
            status, answer = await replay(client, tenant, webhook.id, window, key="replay-1")
            assert (status, answer) == (202, {"queued": 3})
            assert_matches("ReplayAccepted", answer)
            again = await replay(client, tenant, webhook.id, window, key="replay-1")
            assert again == (202, {"queued": 3})
            # A later replay (another request id) marks the end of what the first queued.
            last = {
                "since": (base + timedelta(minutes=20)).isoformat(),
                "until": str(int((base + timedelta(minutes=25)).timestamp())),
            }
            assert await replay(client, tenant, webhook.id, {**last, "request_id": "r2"}) == (
                202,
                {"queued": 1},
            )
            # The webhook is ordered: anything queued twice would arrive before this marker.
            await wait_until(lambda: rx.event_ids()[6:][-1:] == [ids[5]])
    assert rx.event_ids()[6:] == [ids[1], ids[2], ids[3], ids[5]]
    assert [r.body for r in rx.requests[6:9]] == [r.body for r in rx.requests[1:4]]


async def test_a_replay_of_other_topics_only_sends_those(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """``topics`` narrows the replay; another tenant's events are never part of it."""
    await ensure_mirror_topics(settings, [TOPIC, OTHER_TOPIC])
    async with Receiver() as rx, api_client(settings) as client:
        webhook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC, OTHER_TOPIC])
        await create_webhook(pool, settings, other_tenant.id, rx.url_for("other"), [TOPIC])
        async with running(settings):
            async with Producer(settings) as producer:
                mine = await producer.publish(OTHER_TOPIC, {"state": "TX"}, tenant.id)
                await producer.publish(TOPIC, {"registration_id": "r"}, tenant.id)
                await producer.publish(TOPIC, {"registration_id": "r"}, other_tenant.id)
            await wait_until(lambda: len(rx.requests) == 3)
            now = datetime.now(UTC)
            window = {
                "since": (now - timedelta(hours=1)).isoformat(),
                "until": (now + timedelta(hours=1)).isoformat(),
                "topics": [OTHER_TOPIC],
            }
            assert await replay(client, tenant, webhook.id, window) == (202, {"queued": 1})
            await wait_until(lambda: len(rx.on("hook")) == 3)
    assert rx.event_ids()[-1] == mine


async def test_a_replay_sends_only_what_routing_would_send_the_webhook(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """The webhook's filter applies to a replay, and an operational event about the
    webhook itself is never re-sent to it: the same events as routing sent."""
    parked = "HOOKLANE.WEBHOOK.PARKED"
    await ensure_mirror_topics(settings, [TOPIC, parked])
    async with Receiver() as rx, api_client(settings) as client:
        webhook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC, parked])
        await pool.execute(
            "UPDATE webhooks SET filter = $2 WHERE id = $1",
            uuid.UUID(webhook.id),
            {"$or": [{"topic": parked}, {"data.amount": {"$gte": 100}}]},
        )
        async with running(settings):
            async with Producer(settings) as producer:
                for amount in (50, 150, 99, 300):
                    await producer.publish(
                        TOPIC, {"registration_id": f"r{amount}", "amount": amount}, tenant.id
                    )
                about = {"backlog": 3, "failing_since": "2026-12-01T00:00:00Z"}
                await producer.publish(parked, {**about, "webhook_id": webhook.id}, tenant.id)
                other = await producer.publish(
                    parked, {**about, "webhook_id": str(uuid.uuid4())}, tenant.id
                )
            await wait_until(lambda: len(rx.requests) == 3)
            routed = [r.body for r in rx.requests]
            now = datetime.now(UTC)
            window = {
                "since": (now - timedelta(hours=1)).isoformat(),
                "until": (now + timedelta(hours=1)).isoformat(),
            }
            assert await replay(client, tenant, webhook.id, window) == (202, {"queued": 3})
            await wait_until(lambda: len(rx.requests) == 6)
            await asyncio.sleep(0.5)  # anything else queued would arrive meanwhile
    assert len(rx.requests) == 6
    assert sorted(r.body for r in rx.requests[3:]) == sorted(routed)
    assert other in rx.event_ids()[:3]
    amounts = [orjson.loads(body)["data"].get("amount") for body in routed]
    assert sorted(a for a in amounts if a is not None) == [150, 300]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"since": "2026-01-01T10:00:00Z", "until": "2026-01-01T09:00:00Z"}, "/until"),
        ({"since": 1767261600, "until": 1767261600}, "/until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "/until"),
        ({"since": "yesterday", "until": "2026-01-01T09:00:00Z"}, "/since"),
        ({"since": "2026-01-01T10:00:00", "until": "2026-01-02T00:00:00Z"}, "/since"),
        ({"since": -5, "until": 10}, "/since"),
        ({"since": 1, "until": 1e300}, "/until"),
        ({"since": 1, "until": 2, "topics": ["INCORPORATION_REQUEST.COMPLETED"]}, "/topics/0"),
        ({"since": 1, "until": 2, "extra": 1}, "/extra"),
        ({"until": 2}, ""),
    ],
)
async def test_bad_replay_windows_are_422_naming_the_field(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, body: dict[str, Any], path: str
) -> None:
    """until before since, a window beyond the retention, malformed times, foreign topics: 422."""
    async with api_client(settings) as client:
        webhook = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/h", [TOPIC])
        status, answer = await replay(client, tenant, webhook.id, body)
    assert status == 422
    assert path in [detail["path"] for detail in answer["error"]["details"]]


async def test_replay_of_another_tenants_webhook_is_404(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """Another tenant's webhook id looks exactly like an unknown one."""
    async with api_client(settings) as client:
        webhook = await create_webhook(
            pool, settings, other_tenant.id, "http://127.0.0.1:9/h", [TOPIC]
        )
        status, answer = await replay(client, tenant, webhook.id, {"since": 1, "until": 2})
        unknown = await replay(client, tenant, str(uuid.uuid4()), {"since": 1, "until": 2})
    assert status == 404 and unknown[0] == 404
    assert answer == unknown[1]
