"""The attempt log: batched writes, webhook health, listing with cursors, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from dispatcher.deliverer import attempt_log
from dispatcher.deliverer.attempt_log import AttemptLog
from dispatcher.store import attempt_store
from dispatcher.store.attempt_store import list_attempts, purge, record_one
from dispatcher.store.webhook_health import health_changes
from tests.support.failure import make_result, make_webhook
from tests.support.pipeline import wait_until

T0 = 1_700_000_000.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(
    ("statuses", "failures", "succeeded", "first_failure", "last_success", "last_failure"),
    [
        ([200], 0, True, None, 0, None),
        ([500], 1, False, 0, None, 0),
        ([500, 500, 503], 3, False, 0, None, 2),
        ([500, 200], 0, True, None, 1, 0),
        ([500, 200, 500, 500], 2, True, 2, 1, 3),
        ([200, 200], 0, True, None, 1, None),
        ([None, 410], 2, False, 0, None, 1),  # a connect error is a failure too
    ],
)
def test_health_changes(statuses, failures, succeeded, first_failure, last_success, last_failure):
    """A batch folds into one change per webhook: the streak restarts after the last success."""
    results = [make_result("w", status=s, at=T0 + i) for i, s in enumerate(statuses)]
    results.reverse()  # arrival order does not matter, attempt time does
    [change] = health_changes(results)
    assert change.failures == failures
    assert change.succeeded is succeeded
    assert change.first_failure_at == (None if first_failure is None else at(T0 + first_failure))
    assert change.last_success_at == (None if last_success is None else at(T0 + last_success))
    assert change.last_failure_at == (None if last_failure is None else at(T0 + last_failure))


def test_health_changes_ignore_test_attempts() -> None:
    """Test-trigger attempts are logged but never change a webhook's health."""
    assert health_changes([make_result("w", status=500, test=True)]) == []


async def count_attempts(pool: Any, webhook_id: str) -> Any:
    return await pool.fetchval("SELECT count(*) FROM attempts WHERE webhook_id = $1", webhook_id)


async def health(pool: Any, webhook_id: str) -> Any:
    return await pool.fetchrow(
        "SELECT last_success_at, last_failure_at, failing_since, consecutive_failures"
        " FROM webhooks WHERE id = $1",
        webhook_id,
    )


async def test_batches_write_attempts_and_health(pool, tenant, monkeypatch) -> None:
    """1200 results go out as 3 batches (COPY), and the webhook's failure streak is counted."""
    webhook_id = await make_webhook(pool, tenant.id)
    batches = []
    real_write = attempt_store.write_batch

    async def counting_write(conn, results):
        batches.append(len(results))
        await real_write(conn, results)

    monkeypatch.setattr(attempt_log, "write_batch", counting_write)
    log = AttemptLog(pool, max_batch=500)
    for i in range(1200):
        log.record(make_result(webhook_id, tenant.id, status=500, at=T0 + i, attempt=i + 1))
    await log.flush()
    assert batches == [500, 500, 200]
    assert await count_attempts(pool, webhook_id) == 1200
    row = await health(pool, webhook_id)
    assert row["consecutive_failures"] == 1200
    assert row["failing_since"] == at(T0)
    assert row["last_failure_at"] == at(T0 + 1199)
    assert row["last_success_at"] is None


async def test_success_resets_health_across_batches(pool, tenant) -> None:
    """Failures extend the streak across batches; a success clears failing_since and the count."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool)
    log.record(make_result(webhook_id, tenant.id, status=500, at=T0))
    await log.flush()
    log.record(make_result(webhook_id, tenant.id, status=None, at=T0 + 5))
    await log.flush()
    row = await health(pool, webhook_id)
    assert (row["consecutive_failures"], row["failing_since"]) == (2, at(T0))
    log.record(make_result(webhook_id, tenant.id, status=204, at=T0 + 9))
    await log.flush()
    row = await health(pool, webhook_id)
    assert (row["consecutive_failures"], row["failing_since"]) == (0, None)
    assert row["last_success_at"] == at(T0 + 9)
    assert row["last_failure_at"] == at(T0 + 5)


async def test_background_writer_flushes_soon(pool, tenant) -> None:
    """After start(), recorded results reach Postgres without an explicit flush."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool, flush_interval=0.05)
    log.start()
    try:
        log.record(make_result(webhook_id, tenant.id, event_id="bg"))
        await wait_until(lambda: count_attempts(pool, webhook_id))
    finally:
        await log.close()


async def test_idle_writer_does_not_poll(pool, monkeypatch) -> None:
    """With nothing recorded, the background writer never runs a flush (no busy loop)."""
    calls = []
    log = AttemptLog(pool, flush_interval=0.01)
    real_flush = log.flush

    async def counting_flush():
        calls.append(time.monotonic())
        await real_flush()

    monkeypatch.setattr(log, "flush", counting_flush)
    log.start()
    await asyncio.sleep(0.5)
    assert calls == []
    await log.close()


async def test_close_writes_what_is_left(pool, tenant) -> None:
    """close() stops the writer and writes the buffered results."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool, flush_interval=60)
    log.start()
    for i in range(3):
        log.record(make_result(webhook_id, tenant.id, attempt=i + 1))
    await log.close()
    assert (
        await pool.fetchval("SELECT count(*) FROM attempts WHERE webhook_id = $1", webhook_id) == 3
    )


async def test_nul_bytes_are_stored(pool, tenant) -> None:
    """A response body with NUL bytes (invalid in Postgres text) is still logged."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool)
    log.record(make_result(webhook_id, tenant.id, status=500, body="a\x00b"))
    await log.flush()
    body = await pool.fetchval(
        "SELECT response_body FROM attempts WHERE webhook_id = $1", webhook_id
    )
    assert body == "a\ufffdb"


@pytest.mark.parametrize(
    "headers",
    [
        (("Retry-After", "5"),),
        (("X-Empty", ""), ("X-Colon", "a: b"), ("Date", "Tue, 01 Dec 2026 09:30:00 GMT")),
    ],
)
def test_headers_text_round_trips(headers: tuple[tuple[str, str], ...]) -> None:
    """Stored header lines read back as the same pairs (values may hold colons)."""
    assert attempt_store.parse_headers_text(attempt_store.headers_text(headers)) == headers


def test_no_headers_are_stored_as_null() -> None:
    """No response (or no headers) is NULL, and NULL reads back as None."""
    assert attempt_store.headers_text(()) is None
    assert attempt_store.parse_headers_text(None) is None


async def test_detail_is_written_by_copy_and_by_record_one(pool, tenant) -> None:
    """Response headers and the error class survive the COPY batch and the single insert."""
    webhook_id = await make_webhook(pool, tenant.id)
    headers = (("Retry-After", "5"), ("X-Request-Id", "r-1"))
    failed = dataclasses.replace(
        make_result(webhook_id, tenant.id, status=503, event_id="batched"),
        response_headers=headers,
    )
    unreachable = dataclasses.replace(
        make_result(webhook_id, tenant.id, status=None, event_id="single"),
        error="connection refused",
        error_class="ConnectError",
    )
    log = AttemptLog(pool)
    log.record(failed)
    await log.flush()
    single_id = await record_one(pool, unreachable)
    page, _ = await list_attempts(pool, tenant.id, webhook_id)
    by_event = {attempt.event_id: attempt for attempt in page}
    assert by_event["batched"].response_headers == headers
    assert by_event["batched"].error_class == "HTTPStatus"
    single = await attempt_store.get_attempt(pool, tenant.id, webhook_id, single_id)
    assert single is not None
    assert (single.error_class, single.error) == ("ConnectError", "connection refused")
    assert single.response_headers is None


async def test_record_one_returns_the_id(pool, tenant) -> None:
    """record_one writes at once and returns the attempt id (the API's test trigger)."""
    webhook_id = await make_webhook(pool, tenant.id)
    attempt_id = await record_one(
        pool, make_result(webhook_id, tenant.id, test=True, event_id="t1")
    )
    row = await pool.fetchrow("SELECT event_id, test FROM attempts WHERE id = $1", attempt_id)
    assert (row["event_id"], row["test"]) == ("t1", True)


async def test_list_attempts_pages_filters_and_scopes(pool, tenant, other_tenant) -> None:
    """Newest first, keyset cursor, outcome filter, and another tenant sees nothing."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool)
    for i in range(5):
        status = 200 if i % 2 else 500
        log.record(make_result(webhook_id, tenant.id, status=status, event_id=f"e{i}", at=T0 + i))
    await log.flush()

    first, cursor = await list_attempts(pool, tenant.id, webhook_id, limit=2)
    assert [a.event_id for a in first] == ["e4", "e3"]
    assert cursor is not None
    second, cursor = await list_attempts(pool, tenant.id, webhook_id, limit=2, cursor=cursor)
    assert [a.event_id for a in second] == ["e2", "e1"]
    third, cursor = await list_attempts(pool, tenant.id, webhook_id, limit=2, cursor=cursor)
    assert [a.event_id for a in third] == ["e0"]
    assert cursor is None

    failures, _ = await list_attempts(pool, tenant.id, webhook_id, outcome="failure")
    assert [a.event_id for a in failures] == ["e4", "e2", "e0"]
    assert all(a.outcome == "failure" and a.status_code == 500 for a in failures)

    assert await list_attempts(pool, other_tenant.id, webhook_id) == ([], None)
    assert await list_attempts(pool, tenant.id, "not-a-uuid") == ([], None)
    body = first[0].to_json()
    assert body["id"] == str(first[0].id)
    assert body["attempted_at"].endswith("Z")


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "9" * 30])
async def test_list_attempts_rejects_bad_cursor(pool, tenant, cursor) -> None:
    """A cursor that is not one of ours is a ValueError (the API answers 400)."""
    with pytest.raises(ValueError, match="cursor"):
        await list_attempts(pool, tenant.id, "00000000-0000-0000-0000-000000000000", cursor=cursor)


async def test_purge_deletes_only_old_attempts(pool, tenant) -> None:
    """Retention deletes attempts older than the given number of days, nothing newer."""
    webhook_id = await make_webhook(pool, tenant.id)
    now = time.time()
    log = AttemptLog(pool)
    log.record(make_result(webhook_id, tenant.id, event_id="old", at=now - 31 * 86400))
    log.record(make_result(webhook_id, tenant.id, event_id="new", at=now - 29 * 86400))
    await log.flush()
    assert await purge(pool, 30) >= 1
    left = await pool.fetch("SELECT event_id FROM attempts WHERE webhook_id = $1", webhook_id)
    assert [r["event_id"] for r in left] == ["new"]


async def test_health_updates_do_not_notify_routers(pool, database_url, tenant) -> None:
    """Health writes stay off the hooklane_webhooks channel; a state change still notifies."""
    webhook_id = await make_webhook(pool, tenant.id)
    seen: list[str] = []
    conn = await asyncpg.connect(database_url)
    try:
        await conn.add_listener("hooklane_webhooks", lambda *args: seen.append(args[3]))
        await record_one(pool, make_result(webhook_id, tenant.id, status=500))
        await pool.execute("UPDATE webhooks SET state = 'DISABLED' WHERE id = $1", webhook_id)
        # Notifications come in commit order: a health one would be here before this.
        await wait_until(lambda: seen)
    finally:
        await conn.close()
    assert seen == [webhook_id]


async def test_overflow_is_reported_once_per_episode_with_the_count(pool, tenant) -> None:
    """Rows dropped on overflow give one warning with dropped=N when writing resumes."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool, max_batch=5, max_buffered=5)
    with capture_logs() as logs:
        for i in range(8):  # 3 more than fit: the 3 oldest are dropped
            log.record(make_result(webhook_id, tenant.id, at=T0 + i, event_id=f"a{i}"))
        await log.flush()
        await log.flush()  # nothing new dropped: no second warning
        for i in range(6):
            log.record(make_result(webhook_id, tenant.id, at=T0 + 10 + i, event_id=f"b{i}"))
        await log.close()
    warnings = [e for e in logs if e["event"] == "attempt_log.rows_dropped"]
    assert [(w["log_level"], w["dropped"], w["total"]) for w in warnings] == [
        ("warning", 3, 3),
        ("warning", 1, 4),
    ]
    assert await count_attempts(pool, webhook_id) == 10


async def test_no_overflow_no_warning(pool, tenant) -> None:
    """A log that never overflows reports nothing about dropped rows."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool, max_batch=5, max_buffered=5)
    with capture_logs() as logs:
        for i in range(5):
            log.record(make_result(webhook_id, tenant.id, at=T0 + i))
        await log.close()
    assert not [e for e in logs if e["event"] == "attempt_log.rows_dropped"]
