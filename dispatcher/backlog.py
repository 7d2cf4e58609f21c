"""The parked backlog in Postgres (see migrations/002_backlog.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.db import Executor


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
