"""``POST /webhooks/test/trigger/{id}``: deliver one signed test event right now.

Uses the deliverer's own signer and HTTP client (``attempt_delivery`` with the
shared sender), so a passing test means real deliveries will verify too. The attempt
is recorded in the attempt log with ``test = true``; DISABLED webhooks can be tested.
The test event's trace is the request's ``traceparent`` when it has one, else a new one.
A 2xx wakes the webhook's parked backlog, if it has one (``api.backlog_wake``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from aiohttp import web

from api.app_keys import POOL, SECRET_BOX, SENDER
from api.backlog_wake import wake_parked_backlog
from api.errors import invalid_field, not_found
from api.responses import json_response
from api.validation import read_json
from api.webhooks import webhook_or_404
from dispatcher.delivery.attempt import attempt_delivery
from dispatcher.messages import trace_context
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.store.attempt_store import record_one
from dispatcher.store.topic_store import get_topic
from dispatcher.store.webhook_store import Webhook
from dispatcher.store.webhook_targets import load_target

log = structlog.get_logger(__name__)


async def send_test_event(
    request: web.Request, webhook: Webhook, body: dict[str, Any]
) -> dict[str, Any]:
    """Deliver one signed test event to ``webhook`` now; its outcome as the JSON object.

    ``body`` is schema-valid ``test_trigger`` input (optional ``topic`` and ``data``).
    Shared by the REST trigger and the portal's "Send test event".
    """
    topic = body.get("topic", webhook.topics[0])
    if topic not in webhook.topics:
        raise invalid_field(
            "/topic",
            f"{topic!r} is not one of this webhook's topics ({', '.join(webhook.topics)})",
            "enum",
        )
    pool = request.app[POOL]
    if "data" in body:
        data = body["data"]
    else:
        catalog_topic = await get_topic(pool, topic)
        data = catalog_topic.example() if catalog_topic is not None else {}
    target = await load_target(pool, request.app[SECRET_BOX], webhook.id)
    if target is None:  # deleted meanwhile
        raise not_found()
    trace = trace_context.from_http(request.headers) or trace_context.fresh()
    event = Event(str(uuid.uuid4()), topic, webhook.tenant_id, int(time.time()), data, trace)
    task = DeliveryTask(webhook.id, event, kind="test")
    result = await attempt_delivery(request.app[SENDER], target, task, attempt=1)
    await record_one(pool, result)
    if result.success:  # the endpoint answers again: a parked backlog need not wait
        await wake_parked_backlog(request, webhook.id, "test_trigger")
    log.info(
        "webhook.tested",
        webhook_id=webhook.id,
        tenant_id=webhook.tenant_id,
        event_id=event.id,
        status_code=result.status_code,
        error=result.error,
        trace_id=trace.trace_id,
    )
    return {
        "event_id": event.id,
        "delivered": result.success,
        "status_code": result.status_code,
        "duration_ms": round(result.duration_ms, 3),
        "error": result.error,
        "response_body": result.response_body,
    }


async def trigger(request: web.Request) -> web.Response:
    """Send a test event; 200 with its outcome whether or not the receiver accepted it."""
    webhook = await webhook_or_404(request)
    body = await read_json(request, "test_trigger", optional=True)
    return json_response(await send_test_event(request, webhook, body))


def setup_routes(app: web.Application) -> None:
    """Register the test trigger."""
    app.router.add_post("/webhooks/test/trigger/{id}", trigger)
