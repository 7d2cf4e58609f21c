"""Deliveries given up (``failed_deliveries``): kept with their task, for replay.

The deliverer and the backlog scheduler record them; the API lists and re-sends them
(``POST /webhooks/:id/recover``), deleting what was re-enqueued.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dispatcher.ids import parse_uuid
from dispatcher.messages.wire import DeliveryTask

if TYPE_CHECKING:
    from dispatcher.store.db import Connection, Executor


@dataclass(frozen=True, slots=True)
class FailedDelivery:
    """A delivery given up (kept for replay)."""

    id: int
    task: DeliveryTask
    reason: str
    failed_at: datetime


async def record_failed(executor: Executor, task: DeliveryTask, tenant_id: str, reason: str) -> int:
    """Keep a delivery that was given up, with its task, for replay; returns its id."""
    failed_id: int = await executor.fetchval(
        "INSERT INTO failed_deliveries (webhook_id, tenant_id, event_id, task, reason)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        parse_uuid(task.webhook_id),
        tenant_id,
        task.event.id,
        task.to_dict(),
        reason,
    )
    return failed_id


async def record_many(
    conn: Connection,
    webhook_id: uuid.UUID,
    tenant_id: str,
    deliveries: Sequence[tuple[str, Any]],
    reason: str,
) -> None:
    """Keep ``(event_id, stored task)`` deliveries of one webhook given up, in order."""
    # executemany keeps the order (ids are assigned row by row) in one pipelined round trip.
    await conn.executemany(
        "INSERT INTO failed_deliveries (webhook_id, tenant_id, event_id, task, reason)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(webhook_id, tenant_id, event_id, task, reason) for event_id, task in deliveries],
    )


async def latest_task(executor: Executor, webhook_id: str, event_id: str) -> DeliveryTask | None:
    """The task of the webhook's latest failed delivery of ``event_id``, or None."""
    row = await executor.fetchrow(
        "SELECT task FROM failed_deliveries WHERE webhook_id = $1 AND event_id = $2"
        " ORDER BY failed_at DESC LIMIT 1",
        parse_uuid(webhook_id),
        event_id,
    )
    return None if row is None else DeliveryTask.from_dict(row["task"])


async def webhooks_holding(executor: Executor, tenant_id: str, event_id: str) -> set[str]:
    """The tenant's webhooks with a failed delivery of ``event_id`` (``GET /events/:id``)."""
    # Through the tenant's webhooks: failed deliveries are indexed by webhook id first.
    rows = await executor.fetch(
        "SELECT DISTINCT webhook_id::text AS webhook_id FROM failed_deliveries"
        " WHERE webhook_id IN (SELECT id FROM webhooks WHERE tenant_id = $1) AND event_id = $2",
        tenant_id,
        event_id,
    )
    return {row["webhook_id"] for row in rows}


async def failed_since(
    executor: Executor, webhook_id: str, since: datetime, limit: int, *, lock: bool = False
) -> list[FailedDelivery]:
    """Failed deliveries of the webhook at or after ``since``, oldest first.

    With ``lock`` (inside a transaction) the rows are locked and rows locked by a
    concurrent caller are skipped, so two recoveries never send the same delivery.
    """
    rows = await executor.fetch(
        "SELECT id, task, reason, failed_at FROM failed_deliveries"
        " WHERE webhook_id = $1 AND failed_at >= $2 ORDER BY failed_at, id LIMIT $3"
        + (" FOR UPDATE SKIP LOCKED" if lock else ""),
        parse_uuid(webhook_id),
        since,
        limit,
    )
    return [
        FailedDelivery(
            row["id"], DeliveryTask.from_dict(row["task"]), row["reason"], row["failed_at"]
        )
        for row in rows
    ]


async def forget_failed(executor: Executor, ids: Sequence[int]) -> int:
    """Delete failed deliveries that were re-enqueued; returns how many."""
    if not ids:
        return 0
    status = await executor.execute(
        "DELETE FROM failed_deliveries WHERE id = ANY($1::bigint[])", list(ids)
    )
    return int(status.split()[-1])
