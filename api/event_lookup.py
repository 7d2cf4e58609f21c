"""``GET /events/:id``: what happened to one of the tenant's events.

Its state (``routed``, or ``dead_lettered`` with the reason) and its deliveries per
webhook (``dispatcher.store.event_report``), within the replay store's retention.
Another tenant's event id is a 404, like an unknown one.
"""

from __future__ import annotations

from aiohttp import web

from api.app_keys import POOL
from api.auth import tenant_id
from api.errors import not_found
from api.responses import json_response
from dispatcher.router.subscription_index import routes_to_stored
from dispatcher.store.event_report import EventReport, event_report

# Event ids are caller-chosen (Idempotency-Key): at most 200 characters.
MAX_EVENT_ID = 200


async def find_event(request: web.Request, event_id: str) -> EventReport:
    """The tenant's report on ``event_id``, or the 404 (API and portal)."""
    report = None
    if 0 < len(event_id) <= MAX_EVENT_ID:
        report = await event_report(
            request.app[POOL], tenant_id(request), event_id, routes_to_stored
        )
    if report is None:
        raise not_found("event")
    return report


async def show_event(request: web.Request) -> web.Response:
    """→ 200 ``{id, topic, triggered_at, state, reason?, deliveries}``."""
    report = await find_event(request, request.match_info["event_id"])
    return json_response(report.to_json())


def setup_routes(app: web.Application) -> None:
    """Register the event lookup route."""
    app.router.add_get("/events/{event_id}", show_event)
