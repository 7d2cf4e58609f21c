"""``POST /events``: publish an event over HTTP, for producers that are not on Kafka.

An event id (the ``Idempotency-Key`` header, or the body's ``id``) makes the call
idempotent: the API claims the id in the ``events`` table before publishing, and a
repeat within ``HOOKLANE_DEDUP_WINDOW`` answers ``200`` with the id instead of ``202``.
A repeat that arrives before any router routed the first publish publishes again
(the first may have been lost with a crashed API process); the router routes the id
once either way, since it takes over the API's claim only once.

A ``traceparent`` (and ``tracestate``) request header is the event's trace: it rides to
the router in the Kafka record's headers. When spans are exported, the call is the
``hooklane.ingest`` span (its parent: the request's context) and the record carries
that span's context instead (``dispatcher.ops.tracing``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from api.app_keys import POOL, PRODUCER, SETTINGS
from api.auth import tenant_id
from api.errors import RETRY_AFTER_S, ApiError, invalid_field, validation_failed
from api.responses import json_response
from api.validation import read_json
from dispatcher.kafka.producer import Producer, ProducerError, build_event
from dispatcher.messages import trace_context
from dispatcher.messages.topic_schemas import ValidatorCache
from dispatcher.messages.trace_context import TraceContext
from dispatcher.ops import tracing
from dispatcher.publish_rules import PublishRefused, catalog_topic, check_data
from dispatcher.store import events as event_store

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Printable ASCII without spaces or quotes: it becomes the webhook-id header receivers see.
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:~+=/@-]{1,200}$")

# Compiled once per topic; a changed schema is compiled again (one rule with the router).
_VALIDATORS = ValidatorCache()


def producer_for(request: web.Request) -> Producer:
    """The app's connected Kafka producer; 503 when the API runs without a broker, or
    the broker does not accept its connection yet (nothing is claimed or stored then)."""
    producer = request.app.get(PRODUCER)
    if producer is None:
        raise ApiError(503, "unavailable", "no Kafka broker is configured")
    if not producer.started:
        # The cause (credentials, certificates) is the operator's: it is in the log and
        # in the kafka check of /readyz, not in an answer to a tenant.
        raise ApiError(
            503,
            "unavailable",
            "Kafka does not accept this server's connection yet; retry",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return producer


def idempotency_key(request: web.Request, body_id: str | None) -> str | None:
    """The event id the caller chose (header or body), validated; None for a new uuid."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return body_id
    if not IDEMPOTENCY_KEY.match(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-200 characters of A-Z a-z 0-9 _ . : ~ + = / @ -",
        )
    if body_id is not None and body_id != key:
        raise invalid_field("/id", "id differs from the Idempotency-Key header", "const")
    return key


async def publish(request: web.Request) -> web.Response:
    """Validate against the topic's schema, publish to its Kafka topic → 202 ``{id}``.

    A repeat of an event id seen within the dedup window → 200 ``{id}``.
    """
    incoming = trace_context.from_http(request.headers)
    tracer = tracing.ACTIVE
    if tracer is None:
        return await _publish(request, incoming, None)
    span = tracing.start_ingest(tracer, incoming)
    status = 500
    try:
        response = await _publish(request, tracing.context_of(span), span)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        tracing.end_ingest(span, status)


async def _publish(
    request: web.Request, trace: TraceContext | None, span: Span | None
) -> web.Response:
    body = await read_json(request, "event_publish")
    caller = tenant_id(request)
    if body.get("tenant_id", caller) != caller:
        raise ApiError(403, "forbidden", "tenant_id must be your own tenant (or omitted)")
    event_id = idempotency_key(request, body.get("id"))
    pool = request.app[POOL]
    try:
        topic = await catalog_topic(pool, body["topic"], "GET /topics")
        check_data(_VALIDATORS, topic, body["data"])
    except PublishRefused as refused:
        raise validation_failed(refused.problems, refused.message) from None
    producer = producer_for(request)
    event = build_event(topic.name, body["data"], caller, event_id, trace)
    if span is not None:
        tracing.describe_ingest(span, request.app[SETTINGS].mirror_topic(topic.name), event)
    status = 202
    if event_id is not None:
        window = request.app[SETTINGS].dedup_window
        if not await event_store.claim(pool, event, window):
            if await event_store.is_routed(pool, caller, event.id):
                return json_response({"id": event.id}, status=200)
            status = 200  # claimed, not routed yet: publish again (the router routes it once)
    try:
        await producer.publish_event(event, key=body.get("key"))
    except (ProducerError, KafkaError, TimeoutError) as exc:
        # MissingTopicError: the catalog topic's mirror was never created (`topics ensure`)
        log.warning(
            "event.publish_failed",
            topic=topic.name,
            tenant_id=caller,
            error=str(exc),
            trace_id=trace.trace_id if trace else None,
        )
        if event_id is not None and status == 202:
            await event_store.release_claim(pool, caller, event.id)
        raise ApiError(503, "unavailable", "the event could not be published; retry") from None
    return json_response({"id": event.id}, status=status)


def setup_routes(app: web.Application) -> None:
    """Register the publish route."""
    app.router.add_post("/events", publish)
