"""``POST /webhooks/{id}/replay``: send every event of a time window to a webhook again.

The events come from the payload store (the ``events`` table: every routed event, kept
``HOOKLANE_ATTEMPT_RETENTION_DAYS``), delivered or not, of the webhook's tenant and
topics (or the requested subset), in the order they were routed. Only what routing
would send the webhook now is re-sent: events its ``filter`` matches, never an
operational event about the webhook itself (``dispatcher.router.subscription_index.routes_to``).
They are written to
the deliveries topic as redeliveries, so the webhook's ordering, backoff and parking
apply. A request id (``Idempotency-Key`` header or ``request_id``) makes the replay
idempotent: a repeat answers the first ``{"queued": n}`` and queues nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from api.app_keys import POOL, SETTINGS
from api.auth import tenant_id
from api.errors import ApiError, invalid_field
from api.publish import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY, producer_for
from api.responses import json_response
from api.validation import moment_field, read_json
from api.webhooks import webhook_or_404
from dispatcher.kafka.producer import ProducerError
from dispatcher.messages.wire import DeliveryTask
from dispatcher.router.subscription_index import filter_of, routes_to
from dispatcher.store import events as event_store
from dispatcher.store import replays as replay_store

log = structlog.get_logger(__name__)

PAGE = 500


def request_id(request: web.Request, body: dict[str, Any]) -> str | None:
    """The replay's request id (header or body), or None when the caller gave none."""
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is not None and not IDEMPOTENCY_KEY.match(header):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-200 characters of A-Z a-z 0-9 _ . : ~ + = / @ -",
        )
    given = body.get("request_id")
    if header is not None and given is not None and header != given:
        raise invalid_field("/request_id", "request_id differs from the Idempotency-Key", "const")
    return header if header is not None else given


async def replay(request: web.Request) -> web.Response:
    """POST /webhooks/{id}/replay ``{since, until, topics?, request_id?}`` → 202 ``{queued}``."""
    webhook = await webhook_or_404(request)
    body = await read_json(request, "replay")
    since, until = moment_field(body["since"], "/since"), moment_field(body["until"], "/until")
    if until <= since:
        raise invalid_field("/until", "until must be later than since", "window")
    retention = timedelta(days=request.app[SETTINGS].attempt_retention_days)
    if until - since > retention:
        raise invalid_field(
            "/until", f"the window may be at most {retention.days} days (the retention)", "window"
        )
    topics = body.get("topics", list(webhook.topics))
    for index, topic in enumerate(topics):
        if topic not in webhook.topics:
            raise invalid_field(
                f"/topics/{index}", f"the webhook is not subscribed to {topic}", "subscribed"
            )
    key = request_id(request, body)
    producer = producer_for(request)  # 503 before touching anything when there is no broker
    caller = tenant_id(request)
    predicate = filter_of(webhook.id, webhook.filter)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        # A concurrent repeat waits on this row until we commit, then reads the answer.
        if key is not None:
            earlier = await replay_store.begin(conn, webhook.id, key)
            if earlier is not None:
                return json_response({"queued": earlier}, status=202)
        queued = 0
        after: event_store.Position | None = None
        while True:
            page, after = await event_store.events_between(
                conn, caller, topics, since, until, after=after, limit=PAGE
            )
            tasks = [
                DeliveryTask(webhook.id, event, kind="redelivery")
                for event in page
                if routes_to(webhook.id, predicate, event)
            ]
            try:
                queued += await producer.enqueue_many(tasks)
            except (ProducerError, KafkaError, TimeoutError) as exc:
                log.warning("replay.enqueue_failed", webhook_id=webhook.id, error=str(exc))
                raise ApiError(
                    503, "unavailable", "the replay could not be queued; retry"
                ) from None
            if after is None:
                break
        if key is not None:
            await replay_store.finish(conn, webhook.id, key, queued)
    log.info("replay.queued", webhook_id=webhook.id, queued=queued)
    return json_response({"queued": queued}, status=202)


def setup_routes(app: web.Application) -> None:
    """Register the replay route."""
    app.router.add_post("/webhooks/{id}/replay", replay)
