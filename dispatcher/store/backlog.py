"""The parked backlog in Postgres (see migrations/002_backlog.sql).

A webhook whose endpoint keeps failing is *parked*: a ``parked_webhooks`` row says
when to retry it, and its pending deliveries wait in ``backlog`` in order (``seq``).
The two tables of one aggregate: ``parked_webhooks`` and ``backlog``, whose invariants
(the append/unpark locking below, the ``backlog_size`` counter) span both.

The deliverer parks lanes (``park``) and appends later deliveries (``append_many_if_parked``);
the backlog scheduler claims due webhooks (``claim_due``), retries the head, drains
the backlog and finally unparks (``unpark``).

Append and unpark never race: ``append_many_if_parked`` holds the parked row ``FOR SHARE``
while it inserts, and ``unpark`` takes it ``FOR UPDATE`` and deletes it only when the
backlog is empty, so a delivery is either appended before the unpark looks (and the
webhook stays parked) or sees no parked row (and is delivered from memory).

Deliveries given up are moved to ``failed_deliveries`` with their task, for replay: the
rows leave ``backlog`` here and enter through ``dispatcher.store.failed_deliveries``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from dispatcher.ids import parse_uuid, valid_uuids
from dispatcher.messages.wire import DeliveryTask
from dispatcher.moments import utc
from dispatcher.store import failed_deliveries

if TYPE_CHECKING:
    from dispatcher.store.db import Connection, Executor


@dataclass(frozen=True, slots=True)
class ParkedWebhook:
    """A claimed parked webhook and the state the scheduler needs."""

    webhook_id: str
    failing_since: float
    failures: int
    next_attempt_at: float  # when it was due (the claim does not change it)
    # From ``webhooks``: when its continuous failure began (None: not failing, e.g.
    # just re-enabled), for auto-disable.
    webhook_failing_since: float | None


@dataclass(frozen=True, slots=True)
class BacklogEntry:
    """One parked delivery, in order."""

    seq: int
    task: DeliveryTask
    enqueued_at: float
    attempts: int


async def backlog_sizes(executor: Executor, webhook_ids: Sequence[str]) -> dict[str, int]:
    """How many deliveries wait in the backlog of each webhook (absent means 0)."""
    if not webhook_ids:
        return {}
    rows = await executor.fetch(
        "SELECT webhook_id::text AS id, count(*) AS n FROM backlog"
        " WHERE webhook_id = ANY($1::uuid[]) GROUP BY webhook_id",
        list(webhook_ids),
    )
    return {row["id"]: row["n"] for row in rows}


async def next_attempts(executor: Executor, webhook_ids: Sequence[str]) -> dict[str, datetime]:
    """When the scheduler next retries each parked webhook among ``webhook_ids``."""
    rows = await executor.fetch(
        "SELECT webhook_id::text AS id, next_attempt_at FROM parked_webhooks"
        " WHERE webhook_id = ANY($1::uuid[])",
        list(webhook_ids),
    )
    return {row["id"]: row["next_attempt_at"] for row in rows}


async def _insert_tasks(
    conn: Connection,
    webhook_id: uuid.UUID,
    tasks: Sequence[DeliveryTask],
    head_attempts: int = 0,
    pause_limit: int | None = None,
) -> None:
    """Append ``tasks`` in order; past ``pause_limit`` a PAUSED webhook loses its oldest.

    Runs inside the caller's transaction, which holds the parked row: the counter
    (``backlog_size``, migration 007) is added to here, the only place rows are inserted,
    and subtracted by the DELETE trigger.
    """
    # executemany keeps the order (seq is assigned row by row) in one pipelined round trip.
    await conn.executemany(
        "INSERT INTO backlog (webhook_id, event_id, task, attempts) VALUES ($1, $2, $3, $4)",
        [
            (webhook_id, task.event.id, task.to_dict(), head_attempts if index == 0 else 0)
            for index, task in enumerate(tasks)
        ],
    )
    counted = await conn.fetchrow(
        "UPDATE parked_webhooks p SET backlog_size = p.backlog_size + $2 FROM webhooks w"
        " WHERE p.webhook_id = $1 AND w.id = p.webhook_id"
        " RETURNING p.backlog_size, w.state, w.tenant_id",
        webhook_id,
        len(tasks),
    )
    if (
        pause_limit is not None
        and counted is not None
        and counted["state"] == "PAUSED"
        and counted["backlog_size"] > pause_limit
    ):
        oldest = await _take_oldest(conn, webhook_id, counted["backlog_size"] - pause_limit)
        await failed_deliveries.record_many(
            conn, webhook_id, counted["tenant_id"], oldest, PAUSE_LIMIT_REASON
        )


PAUSE_LIMIT_REASON = "pause_limit"


async def _take_oldest(
    conn: Connection, webhook_id: uuid.UUID, count: int
) -> list[tuple[str, Any]]:
    """Delete the oldest ``count`` deliveries; their ``(event_id, task)``, oldest first."""
    # The primary key (webhook_id, seq) finds them without a scan.
    rows = await conn.fetch(
        "DELETE FROM backlog WHERE webhook_id = $1 AND seq IN ("
        "  SELECT seq FROM backlog WHERE webhook_id = $1 ORDER BY seq LIMIT $2)"
        " RETURNING seq, event_id, task",
        webhook_id,
        count,
    )
    return [(row["event_id"], row["task"]) for row in sorted(rows, key=lambda row: row["seq"])]


async def park(
    pool: asyncpg.Pool[asyncpg.Record],
    webhook_id: str,
    tasks: Sequence[DeliveryTask],
    failing_since: float,
    failures: int,
    next_attempt_at: float,
    head_attempts: int = 0,
    pause_limit: int | None = None,
) -> bool:
    """Park ``webhook_id`` with ``tasks`` (in order) in one transaction; True if newly parked.

    Already parked: the tasks go after its backlog, the earliest ``failing_since``
    wins and the scheduler's ``next_attempt_at`` is kept. ``head_attempts`` is how
    many times the first task was already tried (for the attempt numbers). A PAUSED
    webhook keeps at most ``pause_limit`` (``HOOKLANE_PAUSE_MAX_BACKLOG``) deliveries:
    the oldest beyond it move to failed deliveries with reason ``pause_limit``.
    """
    key = parse_uuid(webhook_id)
    async with pool.acquire() as conn, conn.transaction():
        # xmax = 0 only on a freshly inserted row: a new parking episode (announced once).
        created: bool = await conn.fetchval(
            "INSERT INTO parked_webhooks (webhook_id, failing_since, failures, next_attempt_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (webhook_id) DO UPDATE SET"
            " failing_since = LEAST(parked_webhooks.failing_since, EXCLUDED.failing_since),"
            " failures = GREATEST(parked_webhooks.failures, EXCLUDED.failures)"
            " RETURNING xmax = 0",
            key,
            utc(failing_since),
            failures,
            utc(next_attempt_at),
        )
        if tasks:
            await _insert_tasks(conn, key, tasks, head_attempts, pause_limit)
    return created


async def append_many_if_parked(
    pool: asyncpg.Pool[asyncpg.Record],
    webhook_id: str,
    tasks: Sequence[DeliveryTask],
    pause_limit: int | None = None,
) -> bool:
    """Append ``tasks`` (in order) if the webhook is parked; False (nothing written) if not.

    ``pause_limit`` bounds a PAUSED webhook's backlog in the same transaction (see ``park``).
    """
    key = parse_uuid(webhook_id)
    async with pool.acquire() as conn, conn.transaction():
        parked = await conn.fetchval(
            "SELECT 1 FROM parked_webhooks WHERE webhook_id = $1 FOR SHARE", key
        )
        if parked is None:
            return False
        await _insert_tasks(conn, key, tasks, pause_limit=pause_limit)
        return True


async def unpark(pool: asyncpg.Pool[asyncpg.Record], webhook_id: str) -> bool:
    """Delete the parked row if the backlog is empty; False while deliveries wait.

    True when the webhook is no longer parked (including: it was not parked). Takes
    the parked row ``FOR UPDATE`` so no ``append_many_if_parked`` is half-way through.
    """
    key = parse_uuid(webhook_id)
    async with pool.acquire() as conn, conn.transaction():
        parked = await conn.fetchval(
            "SELECT 1 FROM parked_webhooks WHERE webhook_id = $1 FOR UPDATE", key
        )
        if parked is None:
            return True
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM backlog WHERE webhook_id = $1)", key):
            return False
        await conn.execute("DELETE FROM parked_webhooks WHERE webhook_id = $1", key)
        return True


async def parked_among(executor: Executor, webhook_ids: Sequence[str]) -> set[str]:
    """Which of ``webhook_ids`` are parked (ids that are not uuids never are)."""
    keys = list(valid_uuids(webhook_ids).values())
    if not keys:
        return set()
    rows = await executor.fetch(
        "SELECT webhook_id::text AS id FROM parked_webhooks WHERE webhook_id = ANY($1::uuid[])",
        keys,
    )
    return {row["id"] for row in rows}


# --- the scheduler's side -------------------------------------------------------------


def _parked(row: asyncpg.Record) -> ParkedWebhook:
    webhook_failing_since = row["webhook_failing_since"]
    return ParkedWebhook(
        webhook_id=row["webhook_id"],
        failing_since=row["failing_since"].timestamp(),
        failures=row["failures"],
        next_attempt_at=row["next_attempt_at"].timestamp(),
        webhook_failing_since=(
            None if webhook_failing_since is None else webhook_failing_since.timestamp()
        ),
    )


async def claim_due(
    executor: Executor, now: float, lease_s: float, limit: int
) -> list[ParkedWebhook]:
    """Claim up to ``limit`` due, unleased parked webhooks that are ENABLED, earliest first.

    A claim is a lease (``leased_until = now + lease_s``): other schedulers skip the
    webhook while this one works on it (``SKIP LOCKED`` makes concurrent claims
    disjoint), and if this process dies the lease simply runs out.
    """
    rows = await executor.fetch(
        "WITH due AS ("
        "  SELECT p.webhook_id, w.failing_since AS webhook_failing_since"
        "  FROM parked_webhooks p JOIN webhooks w ON w.id = p.webhook_id"
        "  WHERE p.next_attempt_at <= $1 AND w.state = 'ENABLED'"
        "  AND (p.leased_until IS NULL OR p.leased_until <= $1)"
        "  ORDER BY p.next_attempt_at LIMIT $3"
        "  FOR UPDATE OF p SKIP LOCKED)"
        " UPDATE parked_webhooks p SET leased_until = $2 FROM due"
        " WHERE p.webhook_id = due.webhook_id"
        " RETURNING p.webhook_id::text AS webhook_id, p.failing_since, p.failures,"
        " p.next_attempt_at, due.webhook_failing_since",
        utc(now),
        utc(now + lease_s),
        limit,
    )
    return sorted((_parked(row) for row in rows), key=lambda p: p.next_attempt_at)


async def next_due_at(executor: Executor) -> float | None:
    """When the earliest ENABLED parked webhook is due (None: nothing parked)."""
    due = await executor.fetchval(
        "SELECT min(GREATEST(p.next_attempt_at, p.leased_until)) FROM parked_webhooks p"
        " JOIN webhooks w ON w.id = p.webhook_id WHERE w.state = 'ENABLED'"
    )
    return None if due is None else float(due.timestamp())


async def renew_lease(executor: Executor, webhook_id: str, until: float) -> None:
    """Keep a claimed webhook claimed until ``until``."""
    await executor.execute(
        "UPDATE parked_webhooks SET leased_until = $2 WHERE webhook_id = $1",
        parse_uuid(webhook_id),
        utc(until),
    )


async def release(executor: Executor, webhook_id: str) -> None:
    """Give up a claim without rescheduling (any scheduler may take it when due)."""
    await executor.execute(
        "UPDATE parked_webhooks SET leased_until = NULL WHERE webhook_id = $1",
        parse_uuid(webhook_id),
    )


async def retry_now(executor: Executor, webhook_id: str, now: float) -> bool:
    """Make an ENABLED parked webhook due at ``now`` (re-enabled or edited); True if it was."""
    status = await executor.execute(
        "UPDATE parked_webhooks p SET next_attempt_at = $2 FROM webhooks w"
        " WHERE p.webhook_id = $1 AND w.id = p.webhook_id AND w.state = 'ENABLED'"
        " AND p.next_attempt_at > $2",
        parse_uuid(webhook_id),
        utc(now),
    )
    return status.split()[-1] != "0"


async def reschedule(
    executor: Executor,
    webhook_id: str,
    *,
    failures: int,
    failing_since: float,
    next_attempt_at: float,
) -> None:
    """Record the parked webhook's failure streak and next retry, and end the claim."""
    await executor.execute(
        "UPDATE parked_webhooks SET failures = $2, failing_since = $3, next_attempt_at = $4,"
        " leased_until = NULL WHERE webhook_id = $1",
        parse_uuid(webhook_id),
        failures,
        utc(failing_since),
        utc(next_attempt_at),
    )


def _entry(row: asyncpg.Record) -> BacklogEntry:
    return BacklogEntry(
        seq=row["seq"],
        task=DeliveryTask.from_dict(row["task"]),
        enqueued_at=row["enqueued_at"].timestamp(),
        attempts=row["attempts"],
    )


async def head(executor: Executor, webhook_id: str, limit: int) -> list[BacklogEntry]:
    """The first ``limit`` deliveries of the webhook's backlog, in order."""
    rows = await executor.fetch(
        "SELECT seq, task, enqueued_at, attempts FROM backlog WHERE webhook_id = $1"
        " ORDER BY seq LIMIT $2",
        parse_uuid(webhook_id),
        limit,
    )
    return [_entry(row) for row in rows]


async def delivered(executor: Executor, webhook_id: str, seq: int) -> None:
    """Remove a delivered entry from the backlog."""
    await executor.execute(
        "DELETE FROM backlog WHERE webhook_id = $1 AND seq = $2", parse_uuid(webhook_id), seq
    )


async def delivered_through(executor: Executor, webhook_id: str, seq: int) -> None:
    """Remove every backlog entry up to ``seq``: a drained run, in one statement."""
    await executor.execute(
        "DELETE FROM backlog WHERE webhook_id = $1 AND seq <= $2", parse_uuid(webhook_id), seq
    )


async def attempted(executor: Executor, webhook_id: str, seq: int) -> None:
    """Count one more failed attempt of a backlog entry."""
    await executor.execute(
        "UPDATE backlog SET attempts = attempts + 1 WHERE webhook_id = $1 AND seq = $2",
        parse_uuid(webhook_id),
        seq,
    )


async def give_up(
    pool: asyncpg.Pool[asyncpg.Record], entry: BacklogEntry, tenant_id: str, reason: str
) -> int:
    """Move a backlog entry to ``failed_deliveries`` (one transaction); returns its id."""
    async with pool.acquire() as conn, conn.transaction():
        failed_id = await failed_deliveries.record_failed(conn, entry.task, tenant_id, reason)
        await delivered(conn, entry.task.webhook_id, entry.seq)
    return failed_id


async def drop_orphans(executor: Executor) -> int:
    """Forget parked state of deleted webhooks; returns how many were dropped."""
    await executor.execute(
        "DELETE FROM backlog b"
        " WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = b.webhook_id)"
    )
    status = await executor.execute(
        "DELETE FROM parked_webhooks p"
        " WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = p.webhook_id)"
    )
    return int(status.split()[-1])


# --- replay ---------------------------------------------------------------------------


async def find_task(executor: Executor, webhook_id: str, event_id: str) -> DeliveryTask | None:
    """The stored task of ``event_id`` for the webhook (failed first, else still parked)."""
    failed = await failed_deliveries.latest_task(executor, webhook_id, event_id)
    if failed is not None:
        return failed
    row = await executor.fetchrow(
        "SELECT task FROM backlog WHERE webhook_id = $1 AND event_id = $2"
        " ORDER BY enqueued_at DESC LIMIT 1",
        parse_uuid(webhook_id),
        event_id,
    )
    return None if row is None else DeliveryTask.from_dict(row["task"])


async def webhooks_holding(executor: Executor, tenant_id: str, event_id: str) -> set[str]:
    """The tenant's webhooks whose backlog holds ``event_id`` (``GET /events/:id``)."""
    # Through the tenant's webhooks: the backlog is indexed by webhook id first.
    rows = await executor.fetch(
        "SELECT DISTINCT webhook_id::text AS webhook_id FROM backlog"
        " WHERE webhook_id IN (SELECT id FROM webhooks WHERE tenant_id = $1) AND event_id = $2",
        tenant_id,
        event_id,
    )
    return {row["webhook_id"] for row in rows}


@dataclass(frozen=True, slots=True)
class BacklogStats:
    """The Postgres backlog: parked webhooks, deliveries waiting, oldest entry's age."""

    parked_webhooks: int
    deliveries: int
    oldest_age_s: float  # 0 when empty


async def backlog_stats(executor: Executor) -> BacklogStats:
    """Size and age of the backlog, and how many webhooks are parked (one aggregate)."""
    row = await executor.fetchrow(
        "SELECT (SELECT count(*) FROM parked_webhooks) AS parked,"
        " count(*) AS deliveries,"
        " COALESCE(EXTRACT(EPOCH FROM now() - min(enqueued_at)), 0)::float8 AS oldest"
        " FROM backlog"
    )
    assert row is not None  # an aggregate always answers one row
    return BacklogStats(row["parked"], row["deliveries"], max(0.0, row["oldest"]))


async def parked_webhook_ids(executor: Executor) -> list[str]:
    """Every parked webhook's id."""
    return [row[0] for row in await executor.fetch("SELECT webhook_id::text FROM parked_webhooks")]


async def largest_backlogs(executor: Executor, limit: int) -> list[tuple[str, int]]:
    """(webhook id, deliveries) of the ``limit`` parked webhooks with the most, most first."""
    rows = await executor.fetch(
        "SELECT webhook_id::text, count(*) AS n FROM backlog"
        " GROUP BY webhook_id ORDER BY n DESC, webhook_id LIMIT $1",
        limit,
    )
    return [(row[0], row[1]) for row in rows]
