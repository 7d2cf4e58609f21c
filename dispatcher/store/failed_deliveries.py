"""Deliveries given up (``failed_deliveries``): kept with their task, for replay.

The deliverer and the backlog scheduler record them; the API lists and re-sends them
(``POST /webhooks/:id/recover``), deleting what was re-enqueued.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dispatcher.messages.wire import DeliveryTask

if TYPE_CHECKING:
    from dispatcher.store.db import Executor


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
        uuid.UUID(task.webhook_id),
        tenant_id,
        task.event.id,
        task.to_dict(),
        reason,
    )
    return failed_id


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
        uuid.UUID(webhook_id),
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
