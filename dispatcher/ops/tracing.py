"""OpenTelemetry spans, created and exported only when the environment asks for them.

``configure_tracing(process, environ)`` is called once per process (like
``dispatcher.logs.configure_logging``). Only when the standard environment names an
OTLP endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``;
not with ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``) does it import the
SDK and build a ``TracerProvider`` with a ``BatchSpanProcessor`` over the OTLP/HTTP
(protobuf) exporter; the SDK reads the rest of the standard variables itself
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``..._COMPRESSION``, ``..._TIMEOUT``, ``OTEL_BSP_*``).
Spans are batched and sent from the SDK's own thread, never on the event loop.

Otherwise ``ACTIVE`` stays None and nothing here runs: the hot paths test
``tracing.ACTIVE is None`` and only propagate the W3C context
(``dispatcher.messages.trace_context``); not even the OpenTelemetry API is imported.

Spans: ``hooklane.ingest`` (``POST /events``, PRODUCER), ``hooklane.route`` (one per
event in the router, CONSUMER), ``hooklane.deliver`` (one per attempt, CLIENT: the
``traceparent`` the receiver gets names it), ``hooklane.park`` (a delivery moved to
the Postgres backlog) and ``hooklane.parked`` (from parking to the drain attempt).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import structlog

from dispatcher.messages.trace_context import TraceContext

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from dispatcher.messages.wire import Event

log = structlog.get_logger(__name__)

# The tracer while exporting; None: no span is ever created (the default).
ACTIVE: Tracer | None = None
_provider: Any = None  # opentelemetry.sdk.TracerProvider while configured

INSTRUMENTATION = "hooklane"


class AttemptResult(Protocol):
    """What a span needs of ``dispatcher.delivery.attempt.AttemptResult`` (ops sits below
    delivery: a structural type, not an import)."""

    @property
    def success(self) -> bool: ...

    @property
    def status_code(self) -> int | None: ...

    @property
    def error_class(self) -> str | None: ...

    @property
    def error(self) -> str | None: ...

    @property
    def attempted_at(self) -> float: ...

    @property
    def webhook_id(self) -> str: ...

    @property
    def event_id(self) -> str: ...


def exporting(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks for spans to be exported (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporters in ("", "none"):
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def configure_tracing(process: str, environ: Mapping[str, str]) -> bool:
    """Start exporting spans when ``environ`` names an endpoint; True if it does.

    ``process`` (``api``, ``router``, ``deliverer``) names the service,
    ``hooklane-<process>``, unless ``OTEL_SERVICE_NAME`` is set.
    """
    global ACTIVE, _provider
    if ACTIVE is not None or not exporting(environ):
        return ACTIVE is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol and protocol != "http/protobuf":
        log.warning("tracing.protocol_unsupported", protocol=protocol, using="http/protobuf")
    attributes: dict[str, str] = {"hooklane.process": process}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = f"hooklane-{process}"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    ACTIVE = provider.get_tracer(INSTRUMENTATION)
    log.info("tracing.exporting", process=process)
    return True


def shutdown_tracing() -> None:
    """Export what is buffered and stop (tests; at exit the SDK does it itself)."""
    global ACTIVE, _provider
    provider, _provider, ACTIVE = _provider, None, None
    if provider is not None:
        provider.shutdown()


def flush_tracing() -> None:
    """Export every span ended so far."""
    if _provider is not None:
        _provider.force_flush()


# -- contexts -----------------------------------------------------------------------


def _parent(context: TraceContext | None) -> Context | None:
    if context is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    state = TraceState.from_header([context.tracestate]) if context.tracestate else None
    remote = SpanContext(
        int(context.trace_id, 16),
        int(context.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(context.flags, 16)),
        trace_state=state,
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def context_of(span: Span) -> TraceContext:
    """The W3C context that names ``span`` as the parent."""
    found = span.get_span_context()
    state = found.trace_state.to_header() if found.trace_state else ""
    return TraceContext(
        f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}", state
    )


def _start(
    tracer: Tracer,
    name: str,
    parent: TraceContext | None,
    kind: str,
    attributes: dict[str, Any],
    start_time: int | None = None,
) -> Span:
    from opentelemetry.trace import SpanKind

    return tracer.start_span(
        name,
        context=_parent(parent),
        kind=SpanKind[kind],
        attributes=attributes,
        start_time=start_time,
    )


def _failed(span: Span, description: str | None = None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))


# -- the spans ----------------------------------------------------------------------


def start_ingest(tracer: Tracer, parent: TraceContext | None) -> Span:
    """``hooklane.ingest``: ``POST /events`` publishing one event to its Kafka topic."""
    return _start(
        tracer,
        "hooklane.ingest",
        parent,
        "PRODUCER",
        {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "http.request.method": "POST",
            "http.route": "/events",
        },
    )


def describe_ingest(span: Span, kafka_topic: str, event: Event) -> None:
    """What an ingest span publishes, once the event is built."""
    span.set_attributes(
        {
            "messaging.destination.name": kafka_topic,
            "messaging.message.id": event.id,
            "hooklane.event_id": event.id,
            "hooklane.tenant_id": event.tenant_id,
            "hooklane.topic": event.topic,
        }
    )


def end_ingest(span: Span, status: int) -> None:
    """End an ingest span with the API's answer."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        _failed(span)
    span.end()


def start_route(
    tracer: Tracer, parent: TraceContext | None, event: Event, record: Any, group: str
) -> Span:
    """``hooklane.route``: the router processing one event read from Kafka."""
    return _start(
        tracer,
        "hooklane.route",
        parent,
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": str(record.topic),
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": int(record.offset),
            "messaging.consumer.group.name": group,
            "messaging.message.id": event.id,
            "hooklane.event_id": event.id,
            "hooklane.tenant_id": event.tenant_id,
            "hooklane.topic": event.topic,
        },
    )


def end_route(span: Span, webhooks: int, failed: str | None = None) -> None:
    """End a route span once its delivery tasks are acknowledged (``failed``: why not)."""
    span.set_attribute("hooklane.webhooks", webhooks)
    if failed is not None:
        _failed(span, failed)
    span.end()


def start_deliver(
    tracer: Tracer,
    parent: TraceContext,
    url: str,
    webhook_id: str,
    event_id: str,
    attempt: int,
    kind: str,
) -> Span:
    """``hooklane.deliver``: one HTTP attempt (the receiver's ``traceparent`` names it)."""
    # url.full without the query string or user info: webhook URLs may carry tokens.
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return _start(
        tracer,
        "hooklane.deliver",
        parent,
        "CLIENT",
        {
            "http.request.method": "POST",
            "url.full": f"{parts.scheme}://{parts.hostname}:{port}{parts.path}",
            "server.address": parts.hostname or "",
            "server.port": port,
            "hooklane.webhook_id": webhook_id,
            "hooklane.event_id": event_id,
            "hooklane.attempt": attempt,
            "hooklane.task_kind": kind,
        },
    )


def attempt_outcome(result: AttemptResult) -> str:
    """The attempt's outcome as ``hooklane_attempts_total`` labels it (plus ``internal``)."""
    if result.success:
        return "success"
    if result.status_code is not None:
        return "http_error"
    return {
        "DeliveryTimeout": "timeout",
        "BlockedDestination": "blocked",
        "InternalError": "internal",
    }.get(result.error_class or "", "connection_error")


def end_deliver(span: Span, result: AttemptResult, parked_since: float | None = None) -> None:
    """End a deliver span with its outcome (``parked_since``: a backlog drain's parking)."""
    outcome = attempt_outcome(result)
    span.set_attribute("hooklane.outcome", outcome)
    if result.status_code is not None:
        span.set_attribute("http.response.status_code", result.status_code)
    if outcome != "success":
        span.set_attribute("error.type", str(result.status_code or result.error_class))
        _failed(span, result.error)
    if parked_since is not None:
        span.set_attribute("hooklane.parked_s", round(result.attempted_at - parked_since, 3))
    span.end()


def parked(tracer: Tracer, context: TraceContext | None, webhook_id: str, event_id: str) -> None:
    """``hooklane.park``: the moment a delivery moved to the Postgres backlog."""
    span = _start(
        tracer,
        "hooklane.park",
        context,
        "INTERNAL",
        {"hooklane.webhook_id": webhook_id, "hooklane.event_id": event_id},
    )
    span.add_event("hooklane.parked")
    span.end()


def drained(
    tracer: Tracer | None, context: TraceContext, result: AttemptResult, parked_at: float
) -> None:
    """``hooklane.parked``: a span over the time a delivery waited in the backlog, from
    its parking to the attempt that drained it."""
    if tracer is None:
        return
    start, end = int(parked_at * 1e9), max(int(parked_at * 1e9), int(result.attempted_at * 1e9))
    span = _start(
        tracer,
        "hooklane.parked",
        context,
        "INTERNAL",
        {"hooklane.webhook_id": result.webhook_id, "hooklane.event_id": result.event_id},
        start_time=start,
    )
    span.add_event("hooklane.parked", timestamp=start)
    span.add_event("hooklane.drained", timestamp=end)
    span.end(end_time=end)
