"""The ``events`` table: every routed event, for idempotent ingest and replay.

A row per ``(tenant_id, event_id)`` with the event's ``data`` (compressed JSON, see ``pack``),
where it was read from (``source``: ``"<kafka topic>:<partition>:<offset>"``, or NULL
while ``POST /events`` has claimed the id and no router has routed it yet), when it
was routed, a sequence number (original order) and its W3C trace context
(``traceparent``, ``tracestate``: replays keep the event's trace); a dead-lettered event
that parsed has ``dead_letter_reason`` set and counts as neither routed nor seen. Rows
are purged by age (``purge``), after the longer of the dedup window and the attempt
retention.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import lz4.block
import orjson

from dispatcher.messages import trace_context
from dispatcher.messages.wire import Event
from dispatcher.store.db import delete_in_batches

if TYPE_CHECKING:
    from dispatcher.store.db import Executor

# The stored form: one marker byte, then LZ4's block format with the size in front.
# LZ4 compresses ~1 KB of JSON in 0.3-1.2 us where zlib's fastest level took 3.8-9.4
# (the largest single cost of routing an event), at a ratio of 0.67 instead of 0.49 on
# varied JSON (about the same on repetitive JSON). The marker cannot start a zlib
# stream (whose first byte is 0x?8), so rows written before (zlib) still unpack.
LZ4_MARKER = b"\x04"
PURGE_BATCH = 5000

# One statement per router poll. A conflicting row is taken over (and the event routed)
# when it is the same source position read again (a router crashed, or a send failed
# and the batch is re-read), a claim by POST /events (source NULL) or older than the
# window; otherwise it is a duplicate, which RETURNING leaves out. One row comes back:
# how many were routed and, only when that is not all of them, which (decoding a
# returned row per event cost the router ~0.8 us an event, for the rare duplicate).
_RECORD = """
WITH routed AS (
    INSERT INTO events AS e
        (tenant_id, event_id, topic, triggered_at, payload, source, traceparent, tracestate)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[],
                         $6::text[], $9::text[], $10::text[])
    ON CONFLICT (tenant_id, event_id) DO UPDATE SET
        topic = EXCLUDED.topic,
        triggered_at = EXCLUDED.triggered_at,
        payload = EXCLUDED.payload,
        traceparent = EXCLUDED.traceparent,
        tracestate = EXCLUDED.tracestate,
        routed_at = CASE WHEN e.source = EXCLUDED.source THEN e.routed_at ELSE now() END,
        seq = CASE WHEN e.source = EXCLUDED.source THEN e.seq ELSE EXCLUDED.seq END,
        source = EXCLUDED.source,
        dead_letter_reason = NULL
    WHERE e.source IS NULL
       OR e.source = EXCLUDED.source
       OR e.dead_letter_reason IS NOT NULL
       OR e.routed_at < now() - make_interval(secs => $7)
    RETURNING e.tenant_id, e.event_id
)
SELECT count(*)::int AS routed,
       CASE WHEN count(*) < $8 THEN array_agg(tenant_id) END AS tenant_ids,
       CASE WHEN count(*) < $8 THEN array_agg(event_id) END AS event_ids
FROM routed
"""

# A dead-lettered event, kept with its reason; never over an event that was routed.
_DEAD_LETTERED = """
INSERT INTO events AS e (tenant_id, event_id, topic, triggered_at, payload, source,
                         dead_letter_reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[],
                     $6::text[], $7::text[])
ON CONFLICT (tenant_id, event_id) DO UPDATE SET
    topic = EXCLUDED.topic,
    triggered_at = EXCLUDED.triggered_at,
    payload = EXCLUDED.payload,
    source = EXCLUDED.source,
    routed_at = now(),
    dead_letter_reason = EXCLUDED.dead_letter_reason
WHERE e.source IS NULL OR e.dead_letter_reason IS NOT NULL
"""

# POST /events with an event id: claim it unless it was seen within the window.
_CLAIM = """
INSERT INTO events AS e (tenant_id, event_id, topic, triggered_at, payload, source)
VALUES ($1, $2, $3, $4, $5, NULL)
ON CONFLICT (tenant_id, event_id) DO UPDATE SET
    topic = EXCLUDED.topic,
    triggered_at = EXCLUDED.triggered_at,
    payload = EXCLUDED.payload,
    routed_at = now(),
    seq = EXCLUDED.seq,
    source = NULL
WHERE e.routed_at < now() - make_interval(secs => $6)
RETURNING true
"""


def pack(data: dict[str, Any]) -> bytes:
    """The stored form of an event's ``data`` (see ``LZ4_MARKER``)."""
    compressed: bytes = lz4.block.compress(orjson.dumps(data))
    return LZ4_MARKER + compressed


def unpack(payload: bytes) -> dict[str, Any]:
    """The ``data`` object back from its stored form (LZ4, or zlib for older rows)."""
    raw: bytes
    if payload[:1] == LZ4_MARKER:
        raw = lz4.block.decompress(payload[1:])
    else:
        raw = zlib.decompress(payload)
    data: dict[str, Any] = orjson.loads(raw)
    return data


@dataclass(frozen=True, slots=True)
class Incoming:
    """One decoded Kafka event and the position it was read from."""

    event: Event
    source: str


async def record_routed(
    executor: Executor, incoming: Sequence[Incoming], window_s: float
) -> set[tuple[str, str]]:
    """Record a poll's events; returns the ``(tenant_id, event_id)`` that must be routed.

    ``incoming`` must not hold one key twice (Postgres cannot update a row twice in one
    statement); the caller keeps the first of a poll's repeats.
    """
    if not incoming:
        return set()
    events = [item.event for item in incoming]
    row = await executor.fetchrow(
        _RECORD,
        [event.tenant_id for event in events],
        [event.id for event in events],
        [event.topic for event in events],
        [event.triggered_at for event in events],
        [pack(event.data) for event in events],
        [item.source for item in incoming],
        window_s,
        len(events),
        [event.trace.traceparent if event.trace else None for event in events],
        [event.trace.tracestate or None if event.trace else None for event in events],
    )
    assert row is not None  # an aggregate always answers one row
    if row["routed"] == len(events):
        return {(event.tenant_id, event.id) for event in events}
    return set(zip(row["tenant_ids"] or (), row["event_ids"] or (), strict=True))


async def record_dead_lettered(
    executor: Executor, incoming: Sequence[Incoming], reasons: Sequence[str]
) -> None:
    """Keep dead-lettered events with their reasons (``GET /events/:id`` shows them).

    A row of a routed event is left alone; one key must not appear twice.
    """
    if not incoming:
        return
    events = [item.event for item in incoming]
    await executor.execute(
        _DEAD_LETTERED,
        [event.tenant_id for event in events],
        [event.id for event in events],
        [event.topic for event in events],
        [event.triggered_at for event in events],
        [pack(event.data) for event in events],
        [item.source for item in incoming],
        list(reasons),
    )


async def claim(executor: Executor, event: Event, window_s: float) -> bool:
    """Claim ``event``'s id for POST /events; False when it was seen within the window."""
    claimed = await executor.fetchval(
        _CLAIM,
        event.tenant_id,
        event.id,
        event.topic,
        event.triggered_at,
        pack(event.data),
        window_s,
    )
    return bool(claimed)


async def release_claim(executor: Executor, tenant_id: str, event_id: str) -> None:
    """Forget a claim no router took over (its publish failed), so a retry can claim it."""
    await executor.execute(
        "DELETE FROM events WHERE tenant_id = $1 AND event_id = $2 AND source IS NULL",
        tenant_id,
        event_id,
    )


async def is_routed(executor: Executor, tenant_id: str, event_id: str) -> bool:
    """Whether a router routed ``event_id`` (False while only claimed, or unknown)."""
    routed = await executor.fetchval(
        "SELECT source IS NOT NULL AND dead_letter_reason IS NULL FROM events"
        " WHERE tenant_id = $1 AND event_id = $2",
        tenant_id,
        event_id,
    )
    return bool(routed)


def _event(tenant_id: str, row: Any) -> Event:
    return Event(
        row["event_id"],
        row["topic"],
        tenant_id,
        row["triggered_at"],
        unpack(row["payload"]),
        trace_context.parse(row["traceparent"], row["tracestate"]),
    )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An ``events`` row: the event, when it was routed, and why it was dead-lettered."""

    event: Event
    routed_at: datetime
    dead_letter_reason: str | None


async def stored_event(executor: Executor, tenant_id: str, event_id: str) -> StoredEvent | None:
    """The row of ``event_id`` of ``tenant_id``, dead-lettered or not; None when unknown."""
    row = await executor.fetchrow(
        "SELECT event_id, topic, triggered_at, payload, traceparent, tracestate, routed_at,"
        " dead_letter_reason FROM events WHERE tenant_id = $1 AND event_id = $2",
        tenant_id,
        event_id,
    )
    if row is None:
        return None
    return StoredEvent(_event(tenant_id, row), row["routed_at"], row["dead_letter_reason"])


async def get_event(executor: Executor, tenant_id: str, event_id: str) -> Event | None:
    """The stored event ``event_id`` of ``tenant_id``, or None (unknown, or dead-lettered)."""
    stored = await stored_event(executor, tenant_id, event_id)
    return None if stored is None or stored.dead_letter_reason is not None else stored.event


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page of ``events_between`` ended (keyset pagination)."""

    routed_at: datetime
    seq: int


async def events_between(
    executor: Executor,
    tenant_id: str,
    topics: Sequence[str],
    since: datetime,
    until: datetime,
    *,
    after: Position | None,
    limit: int,
) -> tuple[list[Event], Position | None]:
    """Routed events of ``tenant_id`` on ``topics`` in ``[since, until)``, in routed order.

    Returns a page and the position to pass as ``after`` for the next one (None: done).
    """
    rows = await executor.fetch(
        "SELECT event_id, topic, triggered_at, payload, routed_at, seq, traceparent, tracestate"
        " FROM events"
        " WHERE tenant_id = $1 AND topic = ANY($2::text[]) AND source IS NOT NULL"
        " AND dead_letter_reason IS NULL"
        " AND routed_at >= $3 AND routed_at < $4 AND (routed_at, seq) > ($5, $6)"
        " ORDER BY routed_at, seq LIMIT $7",
        tenant_id,
        list(topics),
        since,
        until,
        after.routed_at if after else since,
        after.seq if after else -1,
        limit,
    )
    events = [_event(tenant_id, row) for row in rows]
    if len(rows) < limit:
        return events, None
    return events, Position(rows[-1]["routed_at"], rows[-1]["seq"])


async def purge(executor: Executor, keep_s: float) -> int:
    """Delete events routed more than ``keep_s`` ago, in bounded batches; returns how many."""
    return await delete_in_batches(
        executor,
        "DELETE FROM events WHERE ctid = ANY(ARRAY(SELECT ctid FROM events"
        " WHERE routed_at < now() - make_interval(secs => $1) LIMIT $2))",
        keep_s,
        batch=PURGE_BATCH,
    )
