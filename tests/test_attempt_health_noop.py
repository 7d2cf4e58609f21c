"""The health UPDATE leaves a healthy webhook's row alone when a batch changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dispatcher.store import attempt_store
from tests.support.failure import make_result, make_webhook

T0 = 1_700_000_000.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def write(pool: Any, *results: Any) -> None:
    async with pool.acquire() as conn:
        await attempt_store.write_batch(conn, list(results))


async def row(pool: Any, webhook_id: str) -> Any:
    return await pool.fetchrow(
        "SELECT xmin::text AS version, last_success_at, last_failure_at, failing_since,"
        " consecutive_failures FROM webhooks WHERE id = $1",
        webhook_id,
    )


async def test_successes_of_a_healthy_webhook_within_the_resolution_rewrite_nothing(
    pool: Any, tenant: Any
) -> None:
    """A new webhook's first success is written; more within 1 s leave the row as it is."""
    webhook_id = await make_webhook(pool, tenant.id)
    await write(pool, make_result(webhook_id, tenant.id, at=T0))
    first = await row(pool, webhook_id)
    assert first["last_success_at"] == at(T0)
    await write(pool, make_result(webhook_id, tenant.id, at=T0 + 0.5))
    await write(pool, make_result(webhook_id, tenant.id, at=T0 + 1.0))
    same = await row(pool, webhook_id)
    assert same["version"] == first["version"]  # no new row version
    assert same["last_success_at"] == at(T0)
    await write(pool, make_result(webhook_id, tenant.id, at=T0 + 1.5))
    moved = await row(pool, webhook_id)
    assert moved["version"] != first["version"]
    assert moved["last_success_at"] == at(T0 + 1.5)
    assert (moved["consecutive_failures"], moved["failing_since"]) == (0, None)


async def test_a_success_still_ends_a_streak_written_elsewhere(pool: Any, tenant: Any) -> None:
    """The no-op is decided by the row: a streak another deliverer wrote is still reset."""
    webhook_id = await make_webhook(pool, tenant.id)
    await write(pool, make_result(webhook_id, tenant.id, at=T0))
    await pool.execute(  # another deliverer owned the webhook meanwhile and saw failures
        "UPDATE webhooks SET consecutive_failures = 3, failing_since = $2, last_failure_at = $2"
        " WHERE id = $1",
        webhook_id,
        at(T0 + 0.1),
    )
    await write(pool, make_result(webhook_id, tenant.id, at=T0 + 0.2))
    after = await row(pool, webhook_id)
    assert (after["consecutive_failures"], after["failing_since"]) == (0, None)
    assert after["last_success_at"] == at(T0 + 0.2)


async def test_a_failure_before_a_success_in_one_batch_is_recorded(pool: Any, tenant: Any) -> None:
    """A batch with a failure then a success updates last_failure_at even when healthy."""
    webhook_id = await make_webhook(pool, tenant.id)
    await write(pool, make_result(webhook_id, tenant.id, at=T0))
    await write(
        pool,
        make_result(webhook_id, tenant.id, status=500, at=T0 + 0.1),
        make_result(webhook_id, tenant.id, at=T0 + 0.2),
    )
    after = await row(pool, webhook_id)
    assert after["last_failure_at"] == at(T0 + 0.1)
    assert (after["consecutive_failures"], after["failing_since"]) == (0, None)
