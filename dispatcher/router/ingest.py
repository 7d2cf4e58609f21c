"""Admission of a router poll: which records are routed, dead-lettered or dropped as repeats.

``Ingest.admit(records)`` decodes each record, refuses (with the reason for the
dead-letter topic) what is not a valid event, names a topic outside the catalog or
whose ``data`` fails the topic's JSON Schema (``dispatcher.messages.topic_schemas``, unless
``validate_events`` is off), and records the rest in the ``events`` table in one
statement (``dispatcher.store.events.record_routed``). An event whose
``(tenant_id, id)`` was routed within ``dedup_window`` from another source position is
a duplicate; the same position read again (a router crashed, or a send failed and the
batch is re-read) is routed again, which keeps the router at-least-once.

Postgres being unreachable (or not answering within ``STORE_TIMEOUT_S``) routes every
valid event (duplicates are allowed by at-least-once; events routed meanwhile are
missing from the replay store) rather than stopping delivery for every tenant.

Each event's W3C trace context comes from its record's ``traceparent``/``tracestate``
headers, or is a fresh trace when none came in; when spans are exported, it is the
event's ``hooklane.route`` span instead (its parent: the headers' context), which the
router ends once the event's tasks are acknowledged (``end_spans``). The context is
stored with the event (replays keep the trace) and rides in every delivery task.

``Ingest`` also purges the table once an hour, keeping rows for the longer of the dedup
window and the attempt retention (replay needs the payloads that long).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from dispatcher.messages import trace_context
from dispatcher.messages.topic_schemas import describe
from dispatcher.messages.wire import Event, InvalidMessage
from dispatcher.ops import tracing
from dispatcher.router.catalog_schemas import CatalogSchemas
from dispatcher.settings import Settings
from dispatcher.store import db
from dispatcher.store import events as event_store
from dispatcher.store import replays as replay_store

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger(__name__)

PURGE_INTERVAL_S = 3600.0
# Only one router purges at a time.
PURGE_LOCK = 7_405_131_006
# A slow Postgres (the admission step's timeout) counts as unavailable too.
DB_ERRORS = (*db.TRANSIENT_ERRORS, TimeoutError)
# A Postgres that hangs must not stall routing for every tenant longer than this.
STORE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that goes to the dead-letter topic with ``reason`` (``category``: its kind)."""

    reason: str
    category: str = "internal"
    # The event, when the record parsed as one (unknown topic, data against the schema):
    # kept with the reason for GET /events/:id.
    event: Event | None = None


class Duplicate:
    """A record whose event was already routed within the dedup window."""


DUPLICATE = Duplicate()
Verdict = Event | Rejected | Duplicate


def source_of(record: Any) -> str:
    """The record's position, ``<kafka topic>:<partition>:<offset>``."""
    return f"{record.topic}:{record.partition}:{record.offset}"


def first_of_each(keys: Sequence[tuple[str, str] | None]) -> list[int]:
    """The indexes of the first occurrence of every key (None: not an event, skipped)."""
    seen: set[tuple[str, str]] = set()
    firsts = []
    for index, key in enumerate(keys):
        if key is not None and key not in seen:
            seen.add(key)
            firsts.append(index)
    return firsts


def verdicts_after_recording(
    decoded: Sequence[Verdict], firsts: Sequence[int], admitted: set[tuple[str, str]]
) -> list[Verdict]:
    """Each record's verdict once the store answered which first occurrences to route."""
    routed = {index for index in firsts if _key(decoded[index]) in admitted}
    return [
        verdict if not isinstance(verdict, Event) or index in routed else DUPLICATE
        for index, verdict in enumerate(decoded)
    ]


def _key(verdict: Verdict) -> tuple[str, str] | None:
    return (verdict.tenant_id, verdict.id) if isinstance(verdict, Event) else None


class Ingest:
    """The router's admission step (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        topic_known: Callable[[str], Awaitable[bool]],
        group_id: str = "hooklane-router",
    ) -> None:
        self._settings = settings
        self._group_id = group_id
        # The open hooklane.route span of each admitted event (by id()), while exporting.
        self.spans: dict[int, Span] = {}
        self._topic_known = topic_known
        self._prefix_length = len(settings.topic_prefix)
        self._schemas = CatalogSchemas()
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the pool and start the hourly purge."""
        # Asynchronous commit on this pool (events rows, purges): COMMIT skips the WAL
        # flush wait. Only a crash of the Postgres server can lose the last committed
        # polls (up to 3 x wal_writer_delay, 600 ms by default): an event of those
        # that is published again within the dedup window is then routed again, a
        # duplicate delivery that at-least-once allows (receivers dedupe on
        # webhook-id), and those events are missing from the replay store, as when
        # Postgres is unreachable. docs/SECURITY.md, "Known gaps".
        self._pool = await db.create_pool(
            self._settings.database_url,
            min_size=1,
            max_size=2,
            server_settings={"synchronous_commit": "off"},
        )
        self._purger = asyncio.create_task(self._purge_forever(), name="events-purge")

    async def stop(self) -> None:
        """Stop purging and close the pool."""
        purger, self._purger = self._purger, None
        if purger is not None:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def admit(self, records: Sequence[Any]) -> list[Verdict]:
        """One verdict per record, in order: the event to route, Rejected or DUPLICATE."""
        assert self._pool is not None
        if self._settings.validate_events:
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    await self._schemas.refresh_if_stale(self._pool)
            except DB_ERRORS as exc:  # keep validating with the schemas loaded last
                log.warning("ingest.schemas_unavailable", error=str(exc))
        decoded = [await self._decode(record) for record in records]
        firsts = first_of_each([_key(verdict) for verdict in decoded])
        incoming = [
            event_store.Incoming(event, source_of(records[index]))
            for index in firsts
            if isinstance(event := decoded[index], Event)
        ]
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                admitted = await event_store.record_routed(
                    self._pool, incoming, self._settings.dedup_window
                )
        except DB_ERRORS as exc:
            log.warning("ingest.store_unavailable", error=str(exc), events=len(incoming))
            admitted = {(item.event.tenant_id, item.event.id) for item in incoming}
        await self._keep_dead_letters(records, decoded)
        verdicts = verdicts_after_recording(decoded, firsts, admitted)
        duplicates = sum(verdict is DUPLICATE for verdict in verdicts)
        if duplicates:
            log.info("ingest.duplicates_dropped", duplicates=duplicates)
        return verdicts

    async def _keep_dead_letters(self, records: Sequence[Any], decoded: Sequence[Verdict]) -> None:
        """Record the poll's dead-lettered events (best effort: the dead letter is the record)."""
        routed = {_key(verdict) for verdict in decoded}
        seen: set[tuple[str, str]] = set()
        incoming, reasons = [], []
        for record, verdict in zip(records, decoded, strict=True):
            if not isinstance(verdict, Rejected) or verdict.event is None:
                continue
            key = (verdict.event.tenant_id, verdict.event.id)
            if key in routed or key in seen:
                continue
            seen.add(key)
            incoming.append(event_store.Incoming(verdict.event, source_of(record)))
            reasons.append(verdict.reason)
        if not incoming:
            return
        assert self._pool is not None
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await event_store.record_dead_lettered(self._pool, incoming, reasons)
        except DB_ERRORS as exc:
            log.warning("ingest.dead_letters_unrecorded", error=str(exc), events=len(incoming))

    async def _decode(self, record: Any) -> Verdict:
        topic = str(record.topic)[self._prefix_length :]
        incoming = trace_context.from_kafka(record.headers)
        event = None
        try:
            event = Event.from_message(
                record.value, expected_topic=topic, trace=incoming or trace_context.fresh()
            )
            if not await self._topic_known(event.topic):
                raise InvalidMessage(
                    f"topic {event.topic!r} is not in the topic catalog", "unknown_topic"
                )
            if self._settings.validate_events:
                found = self._schemas.problems_of(event.topic, event.data)
                if found:
                    raise InvalidMessage(describe(event.topic, found), "schema")
        except InvalidMessage as exc:
            return Rejected(exc.reason, exc.category, event)
        except Exception as exc:  # never crash on input: whatever this message does
            log.exception("router.internal_error", topic=record.topic, offset=record.offset)
            return Rejected(f"internal error: {type(exc).__name__}: {exc}", "internal")
        tracer = tracing.ACTIVE
        if tracer is not None:
            span = tracing.start_route(tracer, incoming, event, record, self._group_id)
            event.trace = tracing.context_of(span)  # type: ignore[misc]  # not shared yet
            self.spans[id(event)] = span
        return event

    def end_spans(self, webhooks: dict[int, int], failed: str | None = None) -> None:
        """End the route spans of the batch admitted last (``webhooks``: recipients per
        event, by id(); ``failed``: why its tasks were not all acknowledged)."""
        spans, self.spans = self.spans, {}
        for key, span in spans.items():
            tracing.end_route(span, webhooks.get(key, 0), failed)

    async def _purge_forever(self) -> None:
        keep_s = max(self._settings.dedup_window, self._settings.attempt_retention_days * 86400.0)
        while True:
            try:
                assert self._pool is not None
                async with (
                    self._pool.acquire() as conn,
                    db.try_advisory_lock(conn, PURGE_LOCK) as mine,
                ):
                    if mine:
                        events = await event_store.purge(conn, keep_s)
                        replays = await replay_store.purge(conn, keep_s)
                        if events or replays:
                            log.info("ingest.purged", events=events, replays=replays)
            except DB_ERRORS as exc:
                log.warning("ingest.purge_failed", error=str(exc))
            await asyncio.sleep(PURGE_INTERVAL_S)
