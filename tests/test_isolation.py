"""Tenants are isolated: another tenant's ids answer 404 on every route, and events are
delivered only to webhooks of the tenant that emitted them.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import asyncpg

from api.auth import is_portal_page
from dispatcher.messages.wire import Event
from dispatcher.settings import Settings
from dispatcher.store import events as event_store
from tests.conftest import TenantKey
from tests.support.api import TOPIC, api_client, webhook_body
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    start_deliverer,
    start_router,
    wait_until,
)
from tests.support.receiver import Receiver

PLACEHOLDER = re.compile(r"\{(\w+)\}")
# A body that would be valid for each POST route, so that only ownership can fail.
BODIES: dict[str, Any] = {
    "/webhooks/{id}": {"name": "renamed by the other tenant", "state": "DISABLED"},
    "/webhooks/test/trigger/{id}": {},
    "/webhooks/{id}/recover": {},
    "/webhooks/{id}/attempts/{attempt_id}/retry": {},
}


def id_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) of the app that addresses a resource by id."""
    routes = []
    for route in app.router.routes():
        template = route.resource.canonical if route.resource is not None else ""
        if is_portal_page(template):
            continue  # session-cookie pages: tests/test_portal.py checks them the same way
        if route.method in {"GET", "POST", "DELETE", "PATCH", "PUT"} and "{" in template:
            routes.append((route.method, template))
    return sorted(set(routes), key=lambda r: (r[0] == "DELETE", r[1], r[0]))


def fill(template: str, ids: dict[str, str], key_id: str) -> str:
    """``template`` with A's ids: its API key's under /api-keys, else its webhook's."""
    if template.startswith("/api-keys/"):
        ids = {**ids, "id": key_id}
    return PLACEHOLDER.sub(lambda m: ids[m.group(1)], template)


async def test_every_id_route_hides_other_tenants_resources(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """Tenant B gets 404 for tenant A's webhook, attempt and API key ids; A's data is untouched."""
    async with Receiver() as recv, api_client(settings) as client:
        created = await client.post(
            "/webhooks", json=webhook_body(recv.url), headers=tenant.headers
        )
        assert created.status == 201
        webhook_a = await created.json()
        tested = await client.post(
            f"/webhooks/test/trigger/{webhook_a['id']}", json={}, headers=tenant.headers
        )
        assert tested.status == 200
        attempt_id = await pool.fetchval(
            "SELECT id::text FROM attempts WHERE webhook_id = $1::uuid", webhook_a["id"]
        )
        assert attempt_id is not None
        delivered_before = len(recv.requests)
        # A spare key of A's, so the owner's control below revokes that one, not its own.
        spare = await client.post("/api-keys", json={"name": "spare"}, headers=tenant.headers)
        key_a = (await spare.json())["id"]
        # One of tenant A's routed events (GET /events/{event_id}).
        event_a = Event(f"evt-{uuid.uuid4().hex}", TOPIC, tenant.id, 1, {"registration_id": "r"})
        incoming = [event_store.Incoming(event_a, "t:0:0")]
        assert await event_store.record_routed(pool, incoming, settings.dedup_window)
        ids = {"id": webhook_a["id"], "attempt_id": attempt_id, "event_id": event_a.id}
        routes = id_routes(client.app)
        assert ("GET", "/webhooks/{id}") in routes
        assert ("POST", "/webhooks/test/trigger/{id}") in routes

        for method, template in routes:
            response = await client.request(
                method,
                fill(template, ids, key_a),
                json=BODIES.get(template, {}) if method == "POST" else None,
                headers=other_tenant.headers,
            )
            payload = await response.json()
            assert response.status == 404, (method, template, payload)
            assert payload["error"]["code"] == "not_found"
            # The route matched: it is the resource that is hidden, not the path unknown.
            assert payload["error"]["message"] != "no such route", (method, template)

        listed = await client.get("/webhooks", headers=other_tenant.headers)
        assert all(w["id"] != webhook_a["id"] for w in (await listed.json())["data"])
        filtered = await client.get(f"/webhooks?topic={TOPIC}", headers=other_tenant.headers)
        assert all(w["id"] != webhook_a["id"] for w in (await filtered.json())["data"])

        # Nothing B tried changed, triggered or deleted A's webhook.
        after = await client.get(f"/webhooks/{webhook_a['id']}", headers=tenant.headers)
        assert after.status == 200
        unchanged = await after.json()
        assert unchanged["name"] == webhook_a["name"]
        assert unchanged["state"] == "ENABLED"
        assert unchanged["updated_at"] == webhook_a["updated_at"]
        assert len(recv.requests) == delivered_before
        keys = (await (await client.get("/api-keys", headers=tenant.headers)).json())["data"]
        assert [k["revoked_at"] for k in keys if k["id"] == key_a] == [None]

        # Control: the owner reaches every one of these routes (so B's 404s meant "not yours").
        for method, template in routes:
            response = await client.request(
                method,
                fill(template, ids, key_a),
                json=BODIES.get(template, {}) if method == "POST" else None,
                headers=tenant.headers,
            )
            # (A 404 with another code, e.g. a test event that is not stored for a retry,
            # still means the webhook and attempt were found.)
            if response.status == 404:
                code = (await response.json())["error"]["code"]
                assert code != "not_found", (method, template, await response.text())


async def test_publishing_as_another_tenant_is_refused(
    settings: Settings, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """POST /events cannot name another tenant: events are always the caller's."""
    async with api_client(settings) as client:
        response = await client.post(
            "/events",
            json={"topic": TOPIC, "tenant_id": tenant.id, "data": {"registration_id": "r1"}},
            headers=other_tenant.headers,
        )
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "forbidden"


async def test_events_reach_only_their_tenants_webhooks(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """With both tenants subscribed to a topic, each event reaches only its own tenant."""
    from dispatcher.kafka.producer import Producer

    await ensure_mirror_topics(settings, [TOPIC])
    async with Receiver() as rx:
        hook_a = await create_webhook(pool, settings, tenant.id, rx.url_for("a"), [TOPIC])
        hook_b = await create_webhook(pool, settings, other_tenant.id, rx.url_for("b"), [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        try:
            sent: dict[str, list[str]] = {"a": [], "b": []}
            async with Producer(settings) as producer:
                for index in range(10):
                    for name, owner in (("a", tenant), ("b", other_tenant)):
                        event_id = await producer.publish(
                            TOPIC, {"registration_id": f"r{index}"}, tenant_id=owner.id
                        )
                        sent[name].append(event_id)
            await wait_until(
                lambda: len(rx.on("a")) >= 10 and len(rx.on("b")) >= 10,
                message="both tenants' deliveries",
            )
            await asyncio.sleep(0.5)  # give a misrouted duplicate the chance to show up
        finally:
            await router.stop()
            await deliverer.stop()
    assert set(rx.event_ids("a")) == set(sent["a"])
    assert set(rx.event_ids("b")) == set(sent["b"])
    assert all(r.json()["webhook_id"] == hook_a.id for r in rx.on("a"))
    assert all(r.json()["webhook_id"] == hook_b.id for r in rx.on("b"))
