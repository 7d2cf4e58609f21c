"""W3C Trace Context: what is accepted, how it is normalised, and how it rides in tasks."""

from __future__ import annotations

import orjson
import pytest

from dispatcher.messages import trace_context
from dispatcher.messages.trace_context import TraceContext
from dispatcher.messages.wire import DeliveryTask, Event

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (PARENT, PARENT),
        (f" {PARENT} ", PARENT),  # optional whitespace around the value
        (f"00-{TRACE_ID}-00f067aa0ba902b7-00", f"00-{TRACE_ID}-00f067aa0ba902b7-00"),
        # a future version is read as 00 (its extra fields dropped) and sent on as 00
        (f"cc-{TRACE_ID}-00f067aa0ba902b7-09-what-comes", f"00-{TRACE_ID}-00f067aa0ba902b7-09"),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra", None),  # version 00 has nothing more
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),  # version ff is invalid
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero trace id
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),  # all-zero parent id
        (PARENT.upper(), None),  # lowercase hex only
        (f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01", None),
        ("", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_traceparent(value: str | None, expected: str | None) -> None:
    """Valid values are normalised to version 00; anything else is no context at all."""
    parsed = trace_context.parse(value)
    assert (parsed.traceparent if parsed else None) == expected


@pytest.mark.parametrize(
    ("state", "kept"),
    [
        ("congo=t61rcWkgMzE", "congo=t61rcWkgMzE"),
        ("a=1, b=2", "a=1, b=2"),
        ("x" * 513, ""),  # over the propagation limit
        ("bad=\u00e9", ""),  # not printable ASCII
        ("nl=a\nb", ""),
        (None, ""),
    ],
)
def test_tracestate_is_kept_or_dropped_but_never_ends_the_trace(
    state: str | None, kept: str
) -> None:
    """An invalid tracestate is dropped; the traceparent still holds."""
    parsed = trace_context.parse(PARENT, state)
    assert parsed is not None and parsed.tracestate == kept


def test_parts_and_headers() -> None:
    """The context splits into its W3C fields and writes both header forms."""
    context = TraceContext(PARENT, "a=1")
    assert (context.trace_id, context.span_id, context.flags) == (
        TRACE_ID,
        "00f067aa0ba902b7",
        "01",
    )
    assert context.headers() == {"traceparent": PARENT, "tracestate": "a=1"}
    assert context.kafka_headers() == [("traceparent", PARENT.encode()), ("tracestate", b"a=1")]
    assert TraceContext(PARENT).headers() == {"traceparent": PARENT}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("traceparent", PARENT.encode())], TraceContext(PARENT)),
        (
            [("x", b"1"), ("tracestate", b"a=1"), ("traceparent", PARENT.encode())],
            TraceContext(PARENT, "a=1"),
        ),
        # the first of repeated headers counts
        ([("traceparent", PARENT.encode()), ("traceparent", b"junk")], TraceContext(PARENT)),
        ([("traceparent", b"\xff\xfe")], None),
        ([("traceparent", None)], None),
        ([], None),
        (None, None),
    ],
)
def test_from_kafka_headers(
    headers: list[tuple[str, bytes | None]] | None, expected: object
) -> None:
    """Kafka record headers give the producer's context (or none)."""
    found = trace_context.from_kafka(headers)
    assert found == expected
    if found is not None and isinstance(expected, TraceContext):
        assert found.tracestate == expected.tracestate


def test_fresh_and_per_attempt_contexts() -> None:
    """A fresh trace is new each time; an attempt keeps the trace and flags, not the parent."""
    first, second = trace_context.fresh(), trace_context.fresh()
    assert trace_context.parse(first.traceparent) == first
    assert first.trace_id != second.trace_id
    context = TraceContext(f"00-{TRACE_ID}-00f067aa0ba902b7-00", "a=1")
    attempt = trace_context.for_attempt(context)
    assert trace_context.parse(attempt.traceparent, attempt.tracestate) == attempt
    assert (attempt.trace_id, attempt.flags, attempt.tracestate) == (TRACE_ID, "00", "a=1")
    assert attempt.span_id != context.span_id


def test_derived_trace_is_stable_per_event() -> None:
    """Tasks written without a trace still share one trace id per (tenant, event)."""
    one = trace_context.derived("tenant", "evt_1")
    assert one == trace_context.derived("tenant", "evt_1")
    assert one.trace_id != trace_context.derived("other", "evt_1").trace_id
    assert trace_context.parse(one.traceparent) == one


def test_task_carries_the_trace_and_old_tasks_still_decode() -> None:
    """The trace rides in the task's own fields; tasks without it (or with junk) decode."""
    event = Event("evt_1", "T", "tenant", 1, {"a": 1}, TraceContext(PARENT, "a=1"))
    task = DeliveryTask("wh", event)
    value = orjson.loads(task.to_message())
    assert (value["traceparent"], value["tracestate"]) == (PARENT, "a=1")
    assert "traceparent" not in value["event"]  # the event message itself is unchanged
    decoded = DeliveryTask.from_message(task.to_message())
    assert decoded.event.trace == TraceContext(PARENT, "a=1")
    assert decoded.event.trace.tracestate == "a=1"
    old = (
        b'{"webhook_id":"wh","kind":"event","event":' + Event("e", "T", "t", 1).to_message() + b"}"
    )
    assert DeliveryTask.from_message(old).event.trace is None
    junk = orjson.dumps({**value, "traceparent": "junk", "tracestate": 5})
    assert DeliveryTask.from_message(junk).event.trace is None
    assert DeliveryTask.from_dict(task.to_dict()).event.trace == event.trace


def test_the_producer_writes_the_events_trace_or_the_callers_current_span() -> None:
    """Producer headers: the event's own trace first, else an instrumented caller's span."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from dispatcher.kafka.producer import current_trace, trace_headers

    event = Event("e", "T", "t", 1)
    assert current_trace() is None and trace_headers(event) is None
    span = TracerProvider().get_tracer("caller").start_span("publish")
    with trace.use_span(span, end_on_exit=True):
        found = current_trace()
        assert found is not None
        assert found.span_id == f"{span.get_span_context().span_id:016x}"
        assert trace_headers(event) == found.kafka_headers()
        own = Event("e", "T", "t", 1, trace=TraceContext(PARENT))
        assert trace_headers(own) == [("traceparent", PARENT.encode())]
