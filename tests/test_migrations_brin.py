"""Migration 009: the purge-only time indexes of the hot tables are BRIN, and still serve."""

from __future__ import annotations

from typing import Any

from dispatcher.store import attempt_store
from dispatcher.store import events as event_store
from tests.support.failure import make_result, make_webhook


async def test_time_indexes_are_brin(pool: Any) -> None:
    """attempts_time and events_routed use BRIN; the other indexes stay B-trees."""
    rows = await pool.fetch(
        "SELECT c.relname, am.amname FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
        " WHERE i.indrelid IN ('attempts'::regclass, 'events'::regclass)"
    )
    kinds = {row["relname"]: row["amname"] for row in rows}
    assert kinds["attempts_time"] == "brin"
    assert kinds["events_routed"] == "brin"
    assert kinds["attempts_webhook"] == "btree"
    assert kinds["events_replay"] == "btree"


async def test_purge_and_recent_outcomes_by_time(pool: Any, tenant: Any, monkeypatch: Any) -> None:
    """Purge deletes only old attempts, in batches; the last minute counts only recent ones."""
    webhook_id = await make_webhook(pool, tenant.id)
    async with pool.acquire() as conn:
        await attempt_store.write_batch(
            conn,
            [
                make_result(webhook_id, tenant.id, event_id=f"old-{i}", at=1_000_000.0 + i)
                for i in range(7)
            ]
            + [make_result(webhook_id, tenant.id, event_id="new", status=500)],
        )
    before = await attempt_store.recent_outcomes(pool)
    assert before.get("failure", 0) >= 1
    monkeypatch.setattr(attempt_store, "PURGE_BATCH", 3)  # several batches
    assert await attempt_store.purge(pool, 30) >= 7
    left = await pool.fetch("SELECT event_id FROM attempts WHERE webhook_id = $1", webhook_id)
    assert [row["event_id"] for row in left] == ["new"]


async def test_events_purge_by_routed_at(pool: Any) -> None:
    """Events routed longer ago than the window are purged, recent ones stay."""
    await pool.execute(
        "INSERT INTO events (tenant_id, event_id, topic, triggered_at, payload, source, routed_at)"
        " VALUES ('brin-t', 'old', 'T', 0, '\\x00', 's:0:1', now() - interval '2 days'),"
        " ('brin-t', 'new', 'T', 0, '\\x00', 's:0:2', now())"
    )
    assert await event_store.purge(pool, 86400.0) >= 1
    left = await pool.fetch("SELECT event_id FROM events WHERE tenant_id = 'brin-t'")
    assert [row["event_id"] for row in left] == ["new"]
