"""The router's events rows and the attempt log commit asynchronously (docs/SECURITY.md)."""

from __future__ import annotations

from typing import Any

from dispatcher.router.ingest import Ingest
from dispatcher.settings import Settings
from dispatcher.store import attempt_store, webhook_health
from tests.support.failure import make_result, make_webhook


async def test_the_ingest_pool_commits_asynchronously(database_url: str) -> None:
    """Every connection of the router's ingest pool has synchronous_commit off."""

    async def known(_topic: str) -> bool:
        return True

    ingest = Ingest(Settings(database_url=database_url, topic_prefix="p."), known)
    await ingest.start()
    try:
        assert ingest._pool is not None
        assert await ingest._pool.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await ingest.stop()


async def test_only_the_attempt_batch_commits_asynchronously(
    pool: Any, tenant: Any, monkeypatch: Any
) -> None:
    """write_batch sets synchronous_commit off for its own transaction (SET LOCAL) only."""
    webhook_id = await make_webhook(pool, tenant.id)
    seen: list[str] = []
    real = webhook_health.update_health

    async def spying(conn: Any, changes: Any) -> None:
        seen.append(await conn.fetchval("SHOW synchronous_commit"))
        await real(conn, changes)

    monkeypatch.setattr(webhook_health, "update_health", spying)
    async with pool.acquire() as conn:
        await attempt_store.write_batch(conn, [make_result(webhook_id, tenant.id)])
        after = await conn.fetchval("SHOW synchronous_commit")
    assert seen == ["off"]
    assert after == "on"
