"""The ``replays`` table: the answer of each replay request, so a repeat re-queues nothing.

``POST /webhooks/:id/replay`` runs inside a transaction that first inserts its
``(webhook_id, request_id)`` row: a concurrent repeat waits on that row's lock and then
reads the stored answer; a replay that fails rolls its row back, so a retry runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dispatcher.ids import parse_uuid

if TYPE_CHECKING:
    from dispatcher.store.db import Connection, Executor

PURGE_BATCH = 5000


async def begin(conn: Connection, webhook_id: str, request_id: str) -> int | None:
    """Claim ``request_id`` inside the caller's transaction; the earlier answer if a repeat."""
    claimed = await conn.fetchval(
        "INSERT INTO replays (webhook_id, request_id, queued) VALUES ($1, $2, 0)"
        " ON CONFLICT (webhook_id, request_id) DO NOTHING RETURNING true",
        parse_uuid(webhook_id),
        request_id,
    )
    if claimed:
        return None
    queued: int = await conn.fetchval(
        "SELECT queued FROM replays WHERE webhook_id = $1 AND request_id = $2",
        parse_uuid(webhook_id),
        request_id,
    )
    return queued


async def finish(conn: Connection, webhook_id: str, request_id: str, queued: int) -> None:
    """Store the answer of the replay claimed by ``begin``."""
    await conn.execute(
        "UPDATE replays SET queued = $3 WHERE webhook_id = $1 AND request_id = $2",
        parse_uuid(webhook_id),
        request_id,
        queued,
    )


async def purge(executor: Executor, keep_s: float) -> int:
    """Forget replay answers older than ``keep_s``; returns how many."""
    status = await executor.execute(
        "DELETE FROM replays WHERE created_at < now() - make_interval(secs => $1)", keep_s
    )
    return int(status.split()[-1])
