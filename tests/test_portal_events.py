"""The portal's event lookup: the header's search box, the event page, and the link
from each attempt to it (the same answer as `GET /events/:id`)."""

from __future__ import annotations

import re

from dispatcher.settings import Settings
from dispatcher.store import events as event_store
from dispatcher.store.attempt_store import record_one
from tests.conftest import TenantKey
from tests.support.failure import make_result, make_task, make_webhook
from tests.support.portal import portal_client, sign_in


async def test_attempt_links_to_its_event_page_with_every_delivery(
    settings: Settings, pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """From an attempt row to the event's page: its state and the webhook's delivery."""
    webhook_id = await make_webhook(pool, tenant.id, name="orders")
    event = make_task(webhook_id, tenant.id, 1).event
    routed = await event_store.record_routed(
        pool, [event_store.Incoming(event, "t:0:1")], settings.dedup_window
    )
    assert routed == {(tenant.id, event.id)}
    await record_one(pool, make_result(webhook_id, tenant.id, status=503, event_id=event.id))
    async with portal_client(settings) as client:
        await sign_in(client, tenant)
        webhook_page = await (await client.get(f"/portal/webhooks/{webhook_id}")).text()
        assert f'href="/portal/events?id={event.id}"' in webhook_page
        assert 'role="search"' in webhook_page and "Find event" in webhook_page

        page = await client.get("/portal/events", params={"id": event.id})
        assert page.status == 200
        html = await page.text()
        assert re.search(r"<dt>State</dt><dd class=\"good\">routed</dd>", html)
        assert f'<a href="/portal/webhooks/{webhook_id}">orders</a>' in html
        assert re.search(
            r'delivery-status">pending</td>\s*<td>1</td>\s*<td class="status">503', html
        )

        missing = await client.get("/portal/events", params={"id": "no-such-event"})
        assert missing.status == 404
        assert "No event" in await missing.text()
        assert (await client.get("/portal/events")).status == 200  # the empty search form

    async with portal_client(settings) as client:
        await sign_in(client, other_tenant)
        foreign = await client.get("/portal/events", params={"id": event.id})
        assert foreign.status == 404
        assert "orders" not in await foreign.text()
