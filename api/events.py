"""``POST /events``: publish an event over HTTP, for producers that are not on Kafka."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from api.auth import tenant_id
from api.errors import ApiError, invalid_field, validation_failed
from api.keys import POOL, PRODUCER
from api.responses import json_response
from api.validation import compile_schema, problems, read_json
from dispatcher.producer import Producer, ProducerError
from dispatcher.store.topics import get_topic

log = structlog.get_logger(__name__)


def producer_for(request: web.Request) -> Producer:
    """The app's Kafka producer, or 503 when the API runs without a broker."""
    producer = request.app.get(PRODUCER)
    if producer is None:
        raise ApiError(503, "unavailable", "no Kafka broker is configured")
    return producer


async def publish(request: web.Request) -> web.Response:
    """Validate against the topic's schema, publish to its Kafka topic → 202 ``{id}``."""
    body = await read_json(request, "event_publish")
    caller = tenant_id(request)
    if body.get("tenant_id", caller) != caller:
        raise ApiError(403, "forbidden", "tenant_id must be your own tenant (or omitted)")
    topic = await get_topic(request.app[POOL], body["topic"])
    if topic is None:
        raise invalid_field(
            "/topic", f"unknown topic {body['topic']!r} (GET /topics lists the catalog)", "catalog"
        )
    found = problems(compile_schema(topic.schema), body["data"])
    if found:
        for problem in found:
            problem["path"] = "/data" + problem["path"]
        raise validation_failed(found, f"data does not match the schema of {topic.name}")
    try:
        event_id = await producer_for(request).publish(
            topic.name, body["data"], tenant_id=caller, key=body.get("key"), event_id=body.get("id")
        )
    except (ProducerError, KafkaError, TimeoutError) as exc:
        log.warning("event.publish_failed", topic=topic.name, tenant_id=caller, error=str(exc))
        raise ApiError(503, "unavailable", "the event could not be published; retry") from None
    return json_response({"id": event_id}, status=202)


def setup_routes(app: web.Application) -> None:
    """Register the publish route."""
    app.router.add_post("/events", publish)
