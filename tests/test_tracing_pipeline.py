"""Trace propagation, always on: every delivery of an event carries the event's trace.

No exporter here (``dispatcher.ops.tracing.ACTIVE`` is None): a producer's W3C
``traceparent`` (Kafka record header or ``POST /events`` header) reaches the receiver
with the same trace id on the first attempt, retries, a backlog drain after parking,
an attempt retry and a replay; an event without one gets a fresh trace of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from dispatcher.kafka.producer import Producer
from dispatcher.messages import trace_context
from dispatcher.messages.trace_context import TraceContext
from dispatcher.ops import tracing
from dispatcher.settings import Settings
from dispatcher.store import backlog
from tests.conftest import TenantKey
from tests.support.api import api_client, post_event
from tests.support.failure import clean_backlog
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    short_retries,
    wait_until,
)
from tests.support.receiver import Received, Receiver, failing

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)

TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"
PRODUCER_TRACE = TraceContext(
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "vendor=opaque"
)


@pytest.fixture(autouse=True)
def no_export() -> Iterator[None]:
    """These tests are about propagation alone."""
    assert tracing.ACTIVE is None
    yield


def context_of(request: Received) -> TraceContext:
    found = trace_context.from_http(request.headers)
    assert found is not None, f"no valid traceparent: {request.headers.get('traceparent')!r}"
    return found


def traces_by_event(requests: list[Received]) -> dict[str, set[str]]:
    """Each delivered event id → the trace ids its requests carried."""
    found: dict[str, set[str]] = {}
    for request in requests:
        found.setdefault(request.event_id, set()).add(context_of(request).trace_id)
    return found


async def test_an_event_keeps_its_trace_through_retries_parking_drain_retry_and_replay(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """First attempt, retries, the drain after parking, an attempt retry and a replay of
    one event all carry its trace id; each attempt has a parent id of its own."""
    short = short_retries(settings)
    await ensure_mirror_topics(short, [TOPIC])
    async with Receiver() as rx, api_client(short) as client:
        hook = await create_webhook(pool, short, tenant.id, rx.url, [TOPIC])
        async with running(short):
            rx.respond = failing(503)  # until the webhook is parked
            since = int(time.time()) - 1
            async with Producer(short) as producer:
                traced = await producer.publish(
                    TOPIC, {"n": 0}, tenant.id, key="k", trace=PRODUCER_TRACE
                )
                plain = [
                    await producer.publish(TOPIC, {"n": n}, tenant.id, key="k") for n in (1, 2)
                ]
            await wait_until(lambda: backlog.parked_among(pool, [hook.id]), within=30)
            rx.respond = None  # 200 from now on: the drain succeeds
            everyone = {traced, *plain}
            await wait_until(
                lambda: everyone <= {r.event_id for r in rx.requests if r.ok},
                within=60,
                message="every event delivered after the drain",
            )
            first_round = list(rx.requests)
            found: list[dict[str, Any]] = []

            async def logged() -> bool:
                attempts = await client.get(
                    f"/webhooks/{hook.id}/attempts?outcome=success", headers=tenant.headers
                )
                data = (await attempts.json())["data"]
                found[:] = [a for a in data if a["event_id"] == traced]
                return bool(found)

            await wait_until(logged, message="the delivered attempt in the log")
            delivered = found[0]
            retried = await client.post(
                f"/webhooks/{hook.id}/attempts/{delivered['id']}/retry", headers=tenant.headers
            )
            assert retried.status == 202
            replayed = await client.post(
                f"/webhooks/{hook.id}/replay",
                json={"since": since, "until": int(time.time()) + 1},
                headers=tenant.headers,
            )
            assert replayed.status == 202 and (await replayed.json())["queued"] == 3
            await wait_until(lambda: len(rx.requests) >= len(first_round) + 4, within=30)

    retries = [r for r in first_round if r.event_id == traced]
    assert len(retries) >= 2, "the head was not retried: the test proves nothing"
    later = rx.requests[len(first_round) :]
    assert sorted(r.event_id for r in later) == sorted([traced, traced, *plain])
    by_event = traces_by_event(rx.requests)
    assert by_event[traced] == {PRODUCER_TRACE.trace_id}
    for event_id in plain:  # a fresh trace each, kept on every delivery
        assert len(by_event[event_id]) == 1
    assert len({*by_event[plain[0]], *by_event[plain[1]], PRODUCER_TRACE.trace_id}) == 3
    sent = [context_of(r) for r in rx.requests if r.event_id == traced]
    assert len({c.span_id for c in sent}) == len(sent)  # a parent id per attempt
    assert PRODUCER_TRACE.span_id not in {c.span_id for c in sent}
    assert {(c.flags, c.tracestate) for c in sent} == {("01", "vendor=opaque")}


async def test_post_events_and_test_triggers_carry_the_callers_trace(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """``POST /events`` and a test trigger continue the request's traceparent; a trigger
    without one starts a new trace."""
    await ensure_mirror_topics(settings, [TOPIC])
    caller = trace_context.fresh()
    async with Receiver() as rx, api_client(settings) as client:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        async with running(settings):
            event_id = await post_event(client, tenant, {"state": "TX"}, TOPIC, caller.headers())
            await wait_until(lambda: event_id in rx.event_ids(), within=30)
            for headers in (caller.headers(), {}):
                triggered = await client.post(
                    f"/webhooks/test/trigger/{hook.id}", headers={**tenant.headers, **headers}
                )
                assert triggered.status == 200
    published_request, traced_test, untraced_test = rx.requests
    assert context_of(published_request).trace_id == caller.trace_id
    assert context_of(traced_test).trace_id == caller.trace_id
    assert context_of(untraced_test).trace_id != caller.trace_id
