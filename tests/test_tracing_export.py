"""Spans, exported over OTLP/HTTP only when the environment names an endpoint.

The export test runs router, deliverer and API in-process against a loopback OTLP
receiver (``tests/support/otlp_receiver.py``, decoding with ``opentelemetry-proto``): one event
published over ``POST /events`` with a ``traceparent`` is one trace, from the caller's
span through ingest, route, every deliver attempt (failures, the drain after parking,
a replay) to the receiver, whose ``traceparent`` names the deliver span.

``TRACE_WATERFALL=path.json`` keeps the trace's spans for ``docs/tracing/waterfall.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatcher.messages import trace_context
from dispatcher.ops import tracing
from dispatcher.settings import Settings
from dispatcher.store import backlog
from tests.conftest import TenantKey
from tests.support.api import api_client, post_event
from tests.support.failure import clean_backlog
from tests.support.otlp_receiver import OtlpReceiver, Span
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    short_retries,
    wait_until,
)
from tests.support.receiver import Receiver, failing

TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"
CLIENT, PRODUCER, CONSUMER = 3, 4, 5  # OTLP SpanKind values
ERROR = 2  # OTLP Status.code


@pytest.mark.parametrize(
    ("environ", "exports"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_spans_are_exported_only_when_an_endpoint_is_named(
    environ: dict[str, str], exports: bool
) -> None:
    """Only an OTLP endpoint (and no opt-out) turns export on."""
    assert tracing.exporting(environ) is exports


def test_without_an_endpoint_no_exporter_exists_and_opentelemetry_is_not_loaded() -> None:
    """A process without OTEL_* configuration never imports OpenTelemetry: it cannot send."""
    code = (
        "import sys\n"
        "from dispatcher.ops import tracing\n"
        "import dispatcher.deliverer.deliverer, dispatcher.router.router, api.app\n"
        "assert tracing.configure_tracing('router', {'OTEL_SERVICE_NAME': 'x'}) is False\n"
        "assert tracing.ACTIVE is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.fixture
async def collector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OtlpReceiver]:
    """Spans exported to a loopback receiver for the test's duration."""
    async with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "hooklane-test")
        assert tracing.configure_tracing("test", os.environ)
        try:
            yield receiver
        finally:
            # The exporter's thread posts to this loop's server: never block the loop.
            await asyncio.to_thread(tracing.shutdown_tracing)


@pytest.mark.usefixtures(clean_backlog.__name__)
async def test_one_event_is_one_trace_from_the_caller_to_the_receiver(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, collector: OtlpReceiver
) -> None:
    """ingest → route → deliver (failed attempts, the drain after parking, a replay), one
    trace id throughout, and the receiver's traceparent names its deliver span."""
    short = short_retries(settings)
    caller = trace_context.parse("00-5a1c0ffee0ddba11deadbeefcafef00d-0123456789abcdef-01")
    assert caller is not None
    await ensure_mirror_topics(short, [TOPIC])
    async with Receiver() as rx, api_client(short) as client:
        hook = await create_webhook(pool, short, tenant.id, rx.url, [TOPIC])
        async with running(short):
            rx.respond = failing(503)  # until the webhook is parked
            since = int(time.time()) - 1
            event_id = await post_event(client, tenant, {"state": "TX"}, TOPIC, caller.headers())
            await wait_until(lambda: backlog.parked_among(pool, [hook.id]), within=30)
            rx.respond = None  # 200 from now on: the drain succeeds

            async def drained() -> bool:
                return not await backlog.parked_among(pool, [hook.id])

            await wait_until(drained, within=60, message="the backlog drained")
            replayed = await client.post(
                f"/webhooks/{hook.id}/replay",
                json={"since": since, "until": int(time.time()) + 1},
                headers=tenant.headers,
            )
            assert replayed.status == 202
            delivered = len(rx.requests)
            await wait_until(lambda: len(rx.requests) > delivered, within=30)
        await asyncio.to_thread(tracing.flush_tracing)
        await wait_until(lambda: len(collector.named("hooklane.deliver")) >= len(rx.requests))

    spans = [s for s in collector.spans if s.trace_id == caller.trace_id]
    # The webhook's failures and recovery are announced as operational events
    # (HOOKLANE.WEBHOOK.*): events of their own, each routed in a trace of its own.
    ours = [
        s
        for s in collector.spans
        if s.name.startswith("hooklane.")
        and ".HOOKLANE." not in str(s.attributes.get("messaging.destination.name", ""))
    ]
    others = [(s.name, s.attributes) for s in ours if s.trace_id != caller.trace_id]
    assert not others, others
    (ingest,) = [s for s in spans if s.name == "hooklane.ingest"]
    (route,) = [s for s in spans if s.name == "hooklane.route"]
    delivers = sorted((s for s in spans if s.name == "hooklane.deliver"), key=lambda s: s.start_ns)
    assert (ingest.parent_span_id, ingest.kind) == (caller.span_id, PRODUCER)
    assert ingest.attributes["hooklane.event_id"] == event_id
    assert ingest.attributes["http.response.status_code"] == 202
    assert (route.parent_span_id, route.kind) == (ingest.span_id, CONSUMER)
    assert route.attributes["messaging.system"] == "kafka"
    assert route.attributes["hooklane.event_id"] == event_id
    assert route.attributes["hooklane.webhooks"] == 1
    assert {(s.parent_span_id, s.kind) for s in delivers} == {(route.span_id, CLIENT)}
    assert all(s.service == "hooklane-test" for s in spans)

    # Failed attempts and their retries are deliver spans of their own, numbered.
    failed = [s for s in delivers if s.attributes["hooklane.outcome"] == "http_error"]
    succeeded = [s for s in delivers if s.attributes["hooklane.outcome"] == "success"]
    assert len(failed) >= 2 and len(succeeded) == 2  # the drain, then the replay
    assert {s.attributes["http.response.status_code"] for s in failed} == {503}
    assert {s.status_code for s in failed} == {ERROR}
    assert {s.attributes["http.response.status_code"] for s in succeeded} == {200}
    for span in delivers:
        assert span.attributes["hooklane.webhook_id"] == hook.id
        assert span.attributes["hooklane.event_id"] == event_id
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["url.full"] == rx.url  # no query string, no user info
    first_run = [s for s in delivers if s.attributes["hooklane.task_kind"] == "event"]
    assert [s.attributes["hooklane.attempt"] for s in first_run] == list(
        range(1, len(first_run) + 1)
    )

    # The receiver's traceparent names the deliver span of each request.
    sent = [trace_context.from_http(r.headers) for r in rx.requests]
    assert {c.trace_id for c in sent if c} == {caller.trace_id}
    assert [c.span_id for c in sent if c] == [s.span_id for s in delivers]

    # Parked time is visible: the moment of parking, and the wait until the drain.
    parks = [s for s in spans if s.name == "hooklane.park"]
    (waited,) = [s for s in spans if s.name == "hooklane.parked"]
    assert parks and all(s.parent_span_id == route.span_id for s in parks)
    assert "hooklane.parked" in parks[0].events
    assert set(waited.events) == {"hooklane.parked", "hooklane.drained"}
    from_backlog = [s for s in delivers if "hooklane.parked_s" in s.attributes]
    drain = next(s for s in from_backlog if s.attributes["hooklane.outcome"] == "success")
    assert waited.start_ns <= waited.end_ns <= drain.start_ns + 1_000_000

    dump = os.environ.get("TRACE_WATERFALL")
    if dump:
        text = json.dumps([_for_picture(s) for s in spans], indent=1)
        await asyncio.to_thread(Path(dump).write_text, text)


def _for_picture(span: Span) -> dict[str, Any]:
    return {
        "name": span.name,
        "span_id": span.span_id,
        "parent": span.parent_span_id,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "attributes": span.attributes,
        "events": span.events,
    }
