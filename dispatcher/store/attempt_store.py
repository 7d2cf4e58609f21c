"""The attempt log in Postgres (the ``attempts`` table): every delivery attempt.

``write_batch`` is one transaction per batch: a single ``COPY`` into ``attempts`` and a
single ``UPDATE`` of the webhooks' health columns (``dispatcher.store.webhook_health``),
because both must commit together. Test attempts are logged but do not change a
webhook's health. The transaction commits asynchronously (see ``write_batch``). Reads
are scoped by tenant.
``dispatcher.deliverer.attempt_log`` batches results in memory and calls ``write_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.delivery.http.sender import Headers
from dispatcher.ids import parse_uuid
from dispatcher.moments import utc
from dispatcher.store import webhook_health
from dispatcher.store.db import delete_in_batches

if TYPE_CHECKING:
    from dispatcher.store.db import Connection, Executor

Outcome = Literal["success", "failure"]
OUTCOMES: frozenset[str] = frozenset({"success", "failure"})
COLUMNS = (
    "webhook_id",
    "tenant_id",
    "event_id",
    "topic",
    "attempt",
    "attempted_at",
    "outcome",
    "status_code",
    "duration_ms",
    "error",
    "response_body",
    "test",
    "response_headers",
    "error_class",
)
PURGE_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Attempt:
    """One row of the attempt log, as the API shows it."""

    id: int
    webhook_id: str
    event_id: str
    topic: str
    attempt: int
    attempted_at: datetime
    outcome: str
    status_code: int | None
    duration_ms: float
    error: str | None
    response_body: str | None
    test: bool
    # Recorded since migration 008; None on older rows.
    response_headers: Headers | None = None
    error_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``GET /webhooks/:id/attempts``."""
        return {
            "id": str(self.id),
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "topic": self.topic,
            "attempt": self.attempt,
            "attempted_at": self.attempted_at.isoformat().replace("+00:00", "Z"),
            "outcome": self.outcome,
            "status_code": self.status_code,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "response_body": self.response_body,
            "test": self.test,
            "response_headers": None
            if self.response_headers is None
            else [{"name": name, "value": value} for name, value in self.response_headers],
            "error_class": self.error_class,
        }


def _text(value: str | None) -> str | None:
    # Postgres text cannot hold NUL; receivers' bodies sometimes do.
    return None if value is None else value.replace("\x00", "\ufffd")


def headers_text(headers: Headers) -> str | None:
    """Headers as stored: one ``Name: value`` line each (None when there are none)."""
    if not headers:
        return None
    return "\n".join(f"{name}: {value}" for name, value in headers)


def parse_headers_text(text: str | None) -> Headers | None:
    """The inverse of ``headers_text`` (names hold no colon, values no newline)."""
    if text is None:
        return None
    pairs = []
    for line in text.split("\n"):
        name, _, value = line.partition(":")
        pairs.append((name, value.removeprefix(" ")))
    return tuple(pairs)


def to_record(result: AttemptResult) -> tuple[Any, ...]:
    """The ``attempts`` row of ``result``, in ``COLUMNS`` order."""
    return (
        parse_uuid(result.webhook_id),
        result.tenant_id,
        result.event_id,
        result.topic,
        result.attempt,
        utc(result.attempted_at),
        "success" if result.success else "failure",
        result.status_code,
        result.duration_ms,
        _text(result.error),
        _text(result.response_body),
        result.test,
        _text(headers_text(result.response_headers)),
        result.error_class,
    )


async def write_batch(conn: Connection, results: Sequence[AttemptResult]) -> None:
    """Write ``results`` and the health they imply in one transaction (one COPY, one UPDATE)."""
    if not results:
        return
    async with conn.transaction():
        # Asynchronous commit for this transaction only: COMMIT does not wait for the WAL
        # flush (the walwriter flushes within 3 x wal_writer_delay, 600 ms by default).
        # Only a crash of the Postgres server (not of a client, nor a network failure)
        # can lose those last committed batches: attempt rows and health updates,
        # never torn, never the deliveries (their offsets live in Kafka). The log is
        # already best-effort (a kill -9 of the deliverer loses its unflushed rows, a
        # long outage drops the oldest): docs/SECURITY.md, "Known gaps".
        await conn.execute("SET LOCAL synchronous_commit = off")
        await conn.copy_records_to_table(
            "attempts", records=[to_record(r) for r in results], columns=COLUMNS
        )
        await webhook_health.update_health(conn, webhook_health.health_changes(results))


async def record_one(executor: Executor, result: AttemptResult) -> int:
    """Write one attempt now (the API's test trigger); returns its id."""
    if isinstance(executor, asyncpg.Pool):
        async with executor.acquire() as conn:
            return await record_one(conn, result)
    placeholders = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    async with executor.transaction():
        attempt_id: int = await executor.fetchval(
            f"INSERT INTO attempts ({', '.join(COLUMNS)}) VALUES ({placeholders}) RETURNING id",
            *to_record(result),
        )
        await webhook_health.update_health(executor, webhook_health.health_changes([result]))
    return attempt_id


_ATTEMPT = (
    "id, webhook_id::text AS webhook_id, event_id, topic, attempt, attempted_at, outcome,"
    " status_code, duration_ms, error, response_body, test, response_headers, error_class"
)


def _attempt(row: asyncpg.Record) -> Attempt:
    fields = dict(row)
    fields["response_headers"] = parse_headers_text(fields["response_headers"])
    return Attempt(**fields)


def parse_cursor(cursor: str | None) -> int | None:
    """The attempt id in a cursor; ValueError when it is not one of ours."""
    if cursor is None or cursor == "":
        return None
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise ValueError("cursor is not valid")
    return int(cursor)


async def list_attempts(
    executor: Executor,
    tenant_id: str,
    webhook_id: str,
    outcome: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[Attempt], str | None]:
    """One page of a webhook's attempts, newest first, and the next page's cursor.

    Scoped by tenant: another tenant's webhook has no attempts. Raises ValueError for
    a malformed cursor or an unknown outcome.
    """
    after = parse_cursor(cursor)
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}")
    try:
        key = parse_uuid(webhook_id)
    except ValueError:
        return [], None
    rows = await executor.fetch(
        f"SELECT {_ATTEMPT} FROM attempts"
        " WHERE webhook_id = $1 AND tenant_id = $2"
        " AND ($3::text IS NULL OR outcome = $3::text)"
        " AND ($4::bigint IS NULL OR id < $4::bigint)"
        " ORDER BY id DESC LIMIT $5",
        key,
        tenant_id,
        outcome,
        after,
        limit + 1,
    )
    page = [_attempt(row) for row in rows[:limit]]
    next_cursor = str(page[-1].id) if len(rows) > limit else None
    return page, next_cursor


async def get_attempt(
    executor: Executor, tenant_id: str, webhook_id: str, attempt_id: int
) -> Attempt | None:
    """One attempt of the tenant's webhook, or None."""
    try:
        key = parse_uuid(webhook_id)
    except ValueError:
        return None
    row = await executor.fetchrow(
        f"SELECT {_ATTEMPT} FROM attempts WHERE id = $1 AND webhook_id = $2 AND tenant_id = $3",
        attempt_id,
        key,
        tenant_id,
    )
    return None if row is None else _attempt(row)


async def purge(executor: Executor, retention_days: int) -> int:
    """Delete attempts older than ``retention_days``, in bounded batches; returns how many."""
    return await delete_in_batches(
        executor,
        # By ctid, as events.purge: ``id IN (subquery)`` planned as a hash semi join
        # over a sequential scan of the whole table (177 ms per batch on 1M rows).
        "DELETE FROM attempts WHERE ctid = ANY(ARRAY(SELECT ctid FROM attempts"
        " WHERE attempted_at < now() - make_interval(days => $1) LIMIT $2))",
        retention_days,
        batch=PURGE_BATCH,
    )


async def recent_outcomes(executor: Executor, within_s: float = 60.0) -> dict[str, int]:
    """Attempts of the last ``within_s`` seconds by outcome (test triggers excluded)."""
    rows = await executor.fetch(
        "SELECT outcome, count(*) AS n FROM attempts"
        " WHERE attempted_at > now() - make_interval(secs => $1) AND NOT test"
        " GROUP BY outcome ORDER BY outcome",
        within_s,
    )
    return {row["outcome"]: row["n"] for row in rows}


@dataclass(frozen=True, slots=True)
class AttemptSummary:
    """The non-test attempts of one webhook at one event."""

    attempts: int
    last_outcome: str
    last_status_code: int | None
    last_attempt_at: datetime


async def event_attempts(
    executor: Executor, tenant_id: str, event_id: str
) -> dict[str, AttemptSummary]:
    """``{webhook id: summary}`` of the tenant's non-test attempts at ``event_id``."""
    rows = await executor.fetch(
        "SELECT DISTINCT ON (webhook_id) webhook_id::text AS webhook_id,"
        " count(*) OVER (PARTITION BY webhook_id) AS attempts,"
        " outcome, status_code, attempted_at"
        " FROM attempts WHERE event_id = $2 AND tenant_id = $1 AND NOT test"
        " ORDER BY webhook_id, attempted_at DESC, id DESC",
        tenant_id,
        event_id,
    )
    return {
        row["webhook_id"]: AttemptSummary(
            row["attempts"], row["outcome"], row["status_code"], row["attempted_at"]
        )
        for row in rows
    }
