"""The wire formats: the Kafka event message, the delivery task and the delivered body.

Event message (what producers write to ``<prefix><TOPIC>``)::

    {"id": "<uuid>", "topic": "<TOPIC>", "tenant_id": "<tenant>",
     "triggered_at": <unix seconds>, "data": {...}}

Delivery task (what the router writes to ``<prefix>deliveries``, keyed by webhook id)::

    {"webhook_id": "<uuid>", "kind": "event" | "test" | "redelivery",
     "traceparent": "00-...", "tracestate": "...", "event": {...}}

``traceparent`` and ``tracestate`` (W3C Trace Context, ``trace_context``) are the
event's trace; both optional (tasks written before them have neither; an invalid one
is ignored, never a reason to drop the task).

Delivered body (what receivers get): Commenda's event object
``{"id", "topic", "triggered_at", "webhook_id", "data", "api_version"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any, Literal, cast

import orjson

from dispatcher.messages import trace_context
from dispatcher.messages.json_limits import MAX_DATA_DEPTH, NUL, json_problem
from dispatcher.messages.trace_context import TraceContext
from dispatcher.values import immutable

TaskKind = Literal["event", "test", "redelivery"]
TASK_KINDS: frozenset[str] = frozenset({"event", "test", "redelivery"})
MAX_ID_LENGTH = 200
# The largest event Hooklane carries: a Kafka record's value or a POST /events body
# (the API's limit). A delivery task carries its event re-encoded (never longer than
# the record) plus the webhook id and kind; the deliveries topic is created with
# ``max.message.bytes`` for it (``dispatcher.kafka.topic_admin.topic_configs``).
MAX_EVENT_BYTES = 1024 * 1024
MAX_TASK_BYTES = MAX_EVENT_BYTES + 1024


class InvalidMessage(ValueError):
    """A Kafka message that cannot be processed; ``reason`` goes to the dead-letter topic.

    ``category`` is a short, stable name for the kind of problem (the ``reason`` label
    of ``hooklane_events_dead_lettered_total``: bounded, unlike the free-text reason).
    """

    def __init__(self, reason: str, category: str = "missing_field") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


@immutable
class Event:
    """One platform event, as producers publish it.

    ``trace``: its W3C trace context, carried beside the message (Kafka record headers,
    the task's own fields, an ``events`` column), never in ``to_dict()``; not part of
    the event's equality.
    """

    id: str
    topic: str
    tenant_id: str
    triggered_at: int
    data: dict[str, Any] = field(default_factory=dict)
    trace: TraceContext | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The event message as a JSON-ready dict."""
        return {
            "id": self.id,
            "topic": self.topic,
            "tenant_id": self.tenant_id,
            "triggered_at": self.triggered_at,
            "data": self.data,
        }

    def to_message(self) -> bytes:
        """The Kafka message value."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(
        cls,
        value: Any,
        expected_topic: str | None = None,
        *,
        raw: bytes | None = None,
        trace: TraceContext | None = None,
    ) -> Event:
        """Validate a decoded message; InvalidMessage names what is wrong.

        ``raw``: the bytes ``value`` was parsed from, if at hand (speeds up the
        ``dispatcher.messages.json_limits`` check of ``data``).
        """
        if not isinstance(value, dict):
            raise InvalidMessage("the message is not a JSON object", "invalid_json")
        tenant_id = value.get("tenant_id")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise InvalidMessage("tenant_id is missing or not a non-empty string")
        if "data" not in value or not isinstance(value["data"], dict):
            raise InvalidMessage("data is missing or not an object")
        event_id = value.get("id")
        if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LENGTH:
            raise InvalidMessage("id is missing or not a string of 1-200 characters")
        topic = value.get("topic")
        if not isinstance(topic, str) or not topic:
            raise InvalidMessage("topic is missing or not a string")
        if expected_topic is not None and topic != expected_topic:
            raise InvalidMessage(
                f"topic {topic!r} does not match the Kafka topic", "topic_mismatch"
            )
        triggered_at = value.get("triggered_at")
        if isinstance(triggered_at, bool) or not isinstance(triggered_at, int | float):
            raise InvalidMessage("triggered_at is missing or not unix seconds")
        if not 0 <= triggered_at < 2**63:  # else orjson cannot re-encode it: a poison pill
            raise InvalidMessage("triggered_at is out of range for unix seconds")
        # Stored as Postgres text: a NUL cannot be (one rule with data's, json_limits).
        for name, text in (("tenant_id", tenant_id), ("id", event_id), ("topic", topic)):
            if NUL in text:
                raise InvalidMessage(f"{name} holds a NUL character", "nul_character")
        problem = json_problem(value["data"], MAX_DATA_DEPTH, raw, root="/data")
        if problem is not None:
            raise InvalidMessage(problem.reason, problem.category)
        return cls(event_id, topic, tenant_id, int(triggered_at), value["data"], trace)

    @classmethod
    def from_message(
        cls,
        raw: bytes | None,
        expected_topic: str | None = None,
        *,
        trace: TraceContext | None = None,
    ) -> Event:
        """Decode and validate a Kafka message value (``trace``: from its headers)."""
        if raw is None:
            raise InvalidMessage("the message has no value", "invalid_json")
        if len(raw) > MAX_EVENT_BYTES:
            raise InvalidMessage(
                f"the event is {len(raw)} bytes, more than the {MAX_EVENT_BYTES} Hooklane carries",
                "too_large",
            )
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage(f"the value is not valid JSON: {exc}", "invalid_json") from None
        return cls.from_dict(value, expected_topic, raw=raw, trace=trace)


@immutable
class DeliveryTask:
    """Deliver ``event`` to webhook ``webhook_id``."""

    webhook_id: str
    event: Event
    kind: TaskKind = "event"

    def to_dict(self) -> dict[str, Any]:
        """The task as a JSON-ready dict (also the backlog row's payload)."""
        task: dict[str, Any] = {"webhook_id": self.webhook_id, "kind": self.kind}
        trace = self.event.trace
        if trace is not None:
            task["traceparent"] = trace.traceparent
            if trace.tracestate:
                task["tracestate"] = trace.tracestate
        task["event"] = self.event.to_dict()
        return task

    def to_message(self) -> bytes:
        """The deliveries-topic message value."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, value: Any, *, raw: bytes | None = None) -> DeliveryTask:
        """Validate a decoded task; InvalidMessage names what is wrong."""
        if not isinstance(value, dict):
            raise InvalidMessage("the task is not a JSON object", "invalid_json")
        webhook_id = value.get("webhook_id")
        if not isinstance(webhook_id, str) or not webhook_id:
            raise InvalidMessage("webhook_id is missing")
        kind = value.get("kind", "event")
        if not isinstance(kind, str) or kind not in TASK_KINDS:  # a list is unhashable
            shown = repr(kind)[:50] if isinstance(kind, str) else f"of type {type(kind).__name__}"
            raise InvalidMessage(f"unknown task kind {shown}")
        kind = cast(TaskKind, kind)
        trace = None
        traceparent = value.get("traceparent")
        if isinstance(traceparent, str):
            tracestate = value.get("tracestate")
            trace = trace_context.parse(
                traceparent, tracestate if isinstance(tracestate, str) else None
            )
        return cls(webhook_id, Event.from_dict(value.get("event"), raw=raw, trace=trace), kind)

    @classmethod
    def from_message(cls, raw: bytes | None) -> DeliveryTask:
        """Decode and validate a deliveries-topic message value."""
        if raw is None:
            raise InvalidMessage("the message has no value", "invalid_json")
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage(f"the value is not valid JSON: {exc}", "invalid_json") from None
        return cls.from_dict(value, raw=raw)


def task_messages(
    event: Event, webhook_ids: Sequence[str], kind: TaskKind = "event"
) -> list[bytes]:
    """``DeliveryTask(webhook_id, event, kind).to_message()`` for each webhook, byte for byte.

    The router fans one event out to many webhooks; the tasks differ only in
    ``webhook_id``, so the event (and its trace) is encoded once and spliced in (orjson
    writes compact JSON, so the splice is exactly what encoding each task would give).
    """
    trace = b""
    if event.trace is not None:
        # A parsed traceparent is hex digits and dashes: no JSON escaping needed.
        trace = b',"traceparent":"' + event.trace.traceparent.encode() + b'"'
        if event.trace.tracestate:
            trace += b',"tracestate":' + orjson.dumps(event.trace.tracestate)
    tail = b',"kind":' + orjson.dumps(kind) + trace + b',"event":' + event.to_message() + b"}"
    return [b'{"webhook_id":' + orjson.dumps(webhook_id) + tail for webhook_id in webhook_ids]


def delivery_body(event: Event, webhook_id: str, api_version: str) -> bytes:
    """The exact body receivers get: Commenda's event object."""
    return orjson.dumps(
        {
            "id": event.id,
            "topic": event.topic,
            "triggered_at": event.triggered_at,
            "webhook_id": webhook_id,
            "data": event.data,
            "api_version": api_version,
        }
    )
