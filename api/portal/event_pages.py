"""The portal's event lookup: a search box in the header and a page per event.

``GET /portal/events?id=...`` shows what ``GET /events/:id`` answers (the same
function, ``api.event_lookup.find_event``): the event's state and, per webhook, its
delivery status with a link to the webhook's page. The id travels as a query
parameter: caller-chosen ids may hold ``/``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.app_keys import POOL
from api.auth import tenant_id
from api.errors import ApiError
from api.event_lookup import find_event
from api.portal.pages import render
from dispatcher.store.webhook_store import webhook_names


async def event_page(request: web.Request) -> web.Response:
    """GET /portal/events: the search form, or the event ``?id=`` names."""
    event_id = request.query.get("id", "").strip()
    if not event_id:
        return render(request, "event.html", {"event_id": "", "report": None, "names": {}})
    try:
        report = await find_event(request, event_id)
    except ApiError as error:
        if error.status != 404:
            raise
        missing: dict[str, Any] = {"event_id": event_id, "report": None, "names": {}}
        return render(request, "event.html", missing, status=404)
    ids = [delivery.webhook_id for delivery in report.deliveries]
    names = await webhook_names(request.app[POOL], tenant_id(request), ids)
    context: dict[str, Any] = {"event_id": event_id, "report": report, "names": names}
    return render(request, "event.html", context)


def setup_routes(app: web.Application) -> None:
    """Register the event page."""
    app.router.add_get("/portal/events", event_page, allow_head=False)
