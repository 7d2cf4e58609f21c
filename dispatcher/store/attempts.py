"""The attempt log in Postgres: every delivery attempt, and the health it implies.

``write_batch`` is one transaction per batch: a single ``COPY`` into ``attempts`` and a
single ``UPDATE`` of the webhooks' health columns (``last_success_at``,
``last_failure_at``, ``consecutive_failures``, ``failing_since``); the health update
lives here, beside the COPY, because both must commit together. Test attempts are
logged but do not change a webhook's health. A healthy webhook's ``last_success_at``
is kept to within ``LAST_SUCCESS_RESOLUTION`` (1 s): the batches in between leave its
row alone. The transaction commits asynchronously (see ``write_batch``). Reads are
scoped by tenant.
``dispatcher.deliverer.attempt_log`` batches results in memory and calls ``write_batch``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.delivery.http.sender import Headers
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

# One statement for a whole batch: each row is one webhook's net change in the batch.
_UPDATE_HEALTH = """
UPDATE webhooks AS w SET
    last_success_at = GREATEST(w.last_success_at, h.last_success_at),
    last_failure_at = GREATEST(w.last_failure_at, h.last_failure_at),
    consecutive_failures = CASE WHEN h.succeeded THEN h.failures
                                ELSE w.consecutive_failures + h.failures END,
    failing_since = CASE WHEN h.failures = 0 THEN NULL
                         WHEN h.succeeded THEN h.first_failure_at
                         ELSE COALESCE(w.failing_since, h.first_failure_at) END
FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::int[],
            $5::timestamptz[], $6::bool[])
    AS h(webhook_id, last_success_at, last_failure_at, failures, first_failure_at, succeeded)
WHERE w.id = h.webhook_id
  -- A healthy webhook that only succeeded again is left alone unless its
  -- last_success_at is more than LAST_SUCCESS_RESOLUTION behind: no new row version,
  -- no trigger, no WAL for the common case of every batch (see _update_health).
  AND NOT (h.succeeded AND h.failures = 0 AND h.last_failure_at IS NULL
           AND w.consecutive_failures = 0 AND w.failing_since IS NULL
           AND COALESCE(w.last_success_at >= h.last_success_at - $7::interval, false))
"""
# How far a healthy webhook's last_success_at may lag its newest success (see above).
LAST_SUCCESS_RESOLUTION = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class HealthChange:
    """One webhook's net health change over a batch of its attempts (in time order).

    ``succeeded``: some attempt succeeded, so the streak restarts from the failures
    after the last success; otherwise ``failures`` extend the current streak.
    """

    webhook_id: str
    last_success_at: datetime | None
    last_failure_at: datetime | None
    failures: int
    first_failure_at: datetime | None
    succeeded: bool


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


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


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


@lru_cache(maxsize=65536)
def webhook_uuid(webhook_id: str) -> uuid.UUID:
    """``webhook_id`` parsed (ValueError if it is not a UUID); cached, ids repeat."""
    return uuid.UUID(webhook_id)


def to_record(result: AttemptResult) -> tuple[Any, ...]:
    """The ``attempts`` row of ``result``, in ``COLUMNS`` order."""
    return (
        webhook_uuid(result.webhook_id),
        result.tenant_id,
        result.event_id,
        result.topic,
        result.attempt,
        _timestamp(result.attempted_at),
        "success" if result.success else "failure",
        result.status_code,
        result.duration_ms,
        _text(result.error),
        _text(result.response_body),
        result.test,
        _text(headers_text(result.response_headers)),
        result.error_class,
    )


def health_changes(results: Iterable[AttemptResult]) -> list[HealthChange]:
    """Fold a batch of results into one net health change per webhook (tests excluded)."""
    by_webhook: dict[str, list[AttemptResult]] = {}
    for result in results:
        if not result.test:
            by_webhook.setdefault(result.webhook_id, []).append(result)
    changes = []
    for webhook_id, attempts in by_webhook.items():
        attempts.sort(key=lambda attempt: attempt.attempted_at)
        successes = [a.attempted_at for a in attempts if a.success]
        failures = [a.attempted_at for a in attempts if not a.success]
        trailing = [at for at in failures if not successes or at > successes[-1]]
        changes.append(
            HealthChange(
                webhook_id=webhook_id,
                last_success_at=_timestamp(successes[-1]) if successes else None,
                last_failure_at=_timestamp(failures[-1]) if failures else None,
                failures=len(trailing),
                first_failure_at=_timestamp(trailing[0]) if trailing else None,
                succeeded=bool(successes),
            )
        )
    return changes


async def _update_health(conn: Connection, changes: Sequence[HealthChange]) -> None:
    # Most batches are successes of webhooks that are healthy already: the UPDATE's
    # WHERE makes them no-ops in Postgres (the row is read, not rewritten), except for
    # moving last_success_at forward once it lags by LAST_SUCCESS_RESOLUTION. The
    # decision is Postgres's, not a cache here: another deliverer may have written a
    # failure streak for the webhook since (partitions move between deliverers).
    if not changes:
        return
    await conn.execute(
        _UPDATE_HEALTH,
        [uuid.UUID(c.webhook_id) for c in changes],
        [c.last_success_at for c in changes],
        [c.last_failure_at for c in changes],
        [c.failures for c in changes],
        [c.first_failure_at for c in changes],
        [c.succeeded for c in changes],
        LAST_SUCCESS_RESOLUTION,
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
        await _update_health(conn, health_changes(results))


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
        await _update_health(executor, health_changes([result]))
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
        key = uuid.UUID(webhook_id)
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
        key = uuid.UUID(webhook_id)
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
