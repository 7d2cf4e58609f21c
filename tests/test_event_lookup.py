"""`GET /events/:id` and `hooklane events show`: what happened to an event.

A delivered event lists each webhook with its status (a webhook whose filter turned it
away: `filtered`); a dead-lettered one its reason; another tenant's id is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store.attempt_store import AttemptSummary
from dispatcher.store.event_report import DeliveryStatus, delivery_status
from tests.conftest import TenantKey
from tests.support.api import TOPIC, api_client, assert_matches
from tests.support.pipeline import (
    ensure_mirror_topics,
    running,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver
from tests.test_cli import hooklane

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _summary(outcome: str) -> AttemptSummary:
    return AttemptSummary(2, outcome, 200 if outcome == "success" else 503, NOW)


@pytest.mark.parametrize(
    ("summary", "parked", "failed", "routes", "expected"),
    [
        (_summary("success"), False, False, True, "delivered"),
        (_summary("failure"), False, False, True, "pending"),  # retrying in memory
        (_summary("failure"), True, False, True, "parked"),
        (None, True, False, True, "parked"),  # parked behind the backlog's head
        (_summary("gave_up"), False, True, True, "failed"),
        (None, False, False, False, "filtered"),
        (None, False, False, True, "pending"),  # in Kafka, not attempted yet
        (_summary("success"), False, False, False, "delivered"),  # filter changed since
    ],
)
def test_delivery_status(
    summary: AttemptSummary | None,
    parked: bool,
    failed: bool,
    routes: bool,
    expected: DeliveryStatus,
) -> None:
    """A webhook's status follows from its attempts, backlog, give-ups and filter."""
    assert delivery_status(summary, parked, failed, routes) == expected


async def test_a_delivered_and_a_filtered_webhook_and_another_tenants_404(
    internal_topics: Settings, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """One event, two webhooks: delivered to one, filtered by the other; only its
    tenant sees it (API and CLI)."""
    settings = internal_topics
    async with Receiver() as rx, api_client(settings) as client:
        webhooks = []
        for name, extra in (("all", {}), ("big", {"filter": {"data.amount": {"$gte": 100}}})):
            created = await client.post(
                "/webhooks",
                json={"url": rx.url_for(name), "topics": [TOPIC], "name": name, **extra},
                headers=tenant.headers,
            )
            assert created.status == 201, await created.text()
            webhooks.append((await created.json())["id"])
        async with running(settings):
            published = await client.post(
                "/events",
                json={"topic": TOPIC, "data": {"registration_id": "r1", "amount": 5}},
                headers=tenant.headers,
            )
            assert published.status == 202
            event_id = (await published.json())["id"]
            await wait_until(lambda: len(rx.on("all")) == 1, within=60)

            async def delivered_shows() -> bool:
                response = await client.get(f"/events/{event_id}", headers=tenant.headers)
                body = await response.json()
                return any(d["status"] == "delivered" for d in body.get("deliveries", []))

            await wait_until(delivered_shows, within=30, message="the attempt in the log")
        response = await client.get(f"/events/{event_id}", headers=tenant.headers)
        assert response.status == 200
        body = await response.json()
        assert_matches("EventReport", body)
        assert (body["id"], body["topic"], body["state"]) == (event_id, TOPIC, "routed")
        assert "reason" not in body
        by_webhook = {d["webhook_id"]: d for d in body["deliveries"]}
        assert set(by_webhook) == set(webhooks)
        delivered, filtered = by_webhook[webhooks[0]], by_webhook[webhooks[1]]
        assert (delivered["status"], delivered["attempts"], delivered["last_status_code"]) == (
            "delivered",
            1,
            200,
        )
        assert delivered["last_attempt_at"] is not None
        assert filtered == {
            "webhook_id": webhooks[1],
            "status": "filtered",
            "attempts": 0,
            "last_status_code": None,
            "last_attempt_at": None,
        }
        assert rx.on("big") == []

        foreign = await client.get(f"/events/{event_id}", headers=other_tenant.headers)
        unknown = await client.get("/events/no-such-event", headers=tenant.headers)
        for missing in (foreign, unknown):
            assert missing.status == 404
            assert (await missing.json())["error"]["code"] == "not_found"

    code, out, err = await hooklane(settings, "events", "show", event_id, "--tenant", tenant.id)
    assert code == 0, err
    assert f"webhook {webhooks[0]}: delivered (1 attempt(s), last: 200 at" in out
    assert f"webhook {webhooks[1]}: filtered (0 attempt(s))" in out
    code, out, _ = await hooklane(settings, "events", "show", event_id, "--tenant", other_tenant.id)
    assert code == 1 and "no event" in out


async def test_a_dead_lettered_event_shows_its_reason(
    internal_topics: Settings, tenant: TenantKey
) -> None:
    """An event on a topic outside the catalog is dead-lettered, and its lookup says why."""
    settings = internal_topics
    stray = "NOT.IN.THE.CATALOG"
    await ensure_mirror_topics(settings, [stray])  # someone made the Kafka topic by hand
    router = await start_router(settings)
    try:
        async with Producer(settings) as producer:
            event_id = await producer.publish(stray, {"x": 1}, tenant_id=tenant.id)
        async with api_client(settings) as client:

            async def looked_up() -> bool:
                response = await client.get(f"/events/{event_id}", headers=tenant.headers)
                return response.status == 200

            await wait_until(looked_up, within=30, message="the dead-lettered event")
            body = await (await client.get(f"/events/{event_id}", headers=tenant.headers)).json()
    finally:
        await router.stop()
    assert_matches("EventReport", body)
    assert body["state"] == "dead_lettered"
    assert body["reason"] == f"topic {stray!r} is not in the topic catalog"
    assert body["deliveries"] == []
