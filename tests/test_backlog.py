"""The parked backlog: ordered parking, race-free append/unpark, claims, failed deliveries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.store import backlog, failed_deliveries
from dispatcher.store import webhook_store as webhooks
from tests.support.failure import clean_backlog, make_task, make_webhook

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)


async def numbers(pool, webhook_id: str) -> list[int]:
    return [e.task.event.data["n"] for e in await backlog.head(pool, webhook_id, 10_000)]


async def test_park_keeps_order_and_appends_after(pool, tenant) -> None:
    """Parked tasks keep their order; a second park appends after and keeps the schedule."""
    webhook_id = await make_webhook(pool, tenant.id)
    now = time.time()
    first = [make_task(webhook_id, tenant.id, n) for n in range(5)]
    await backlog.park(pool, webhook_id, first, now - 10, 6, now + 300, head_attempts=6)
    await backlog.park(pool, webhook_id, [make_task(webhook_id, tenant.id, 5)], now, 1, now + 1)
    assert await numbers(pool, webhook_id) == [0, 1, 2, 3, 4, 5]
    entries = await backlog.head(pool, webhook_id, 2)
    assert [e.attempts for e in entries] == [6, 0]
    assert entries[0].task == first[0]
    row = await pool.fetchrow(
        "SELECT failing_since, failures, next_attempt_at FROM parked_webhooks"
        " WHERE webhook_id = $1",
        webhook_id,
    )
    assert abs(row["failing_since"].timestamp() - (now - 10)) < 1e-3
    assert row["failures"] == 6
    assert abs(row["next_attempt_at"].timestamp() - (now + 300)) < 1e-3
    assert await backlog.parked_among(pool, [webhook_id, "not-a-uuid"]) == {webhook_id}
    assert await backlog.backlog_sizes(pool, [webhook_id]) == {webhook_id: 6}


async def test_park_reports_a_new_parking_episode(pool, tenant) -> None:
    """park answers True when it created the parked row, False when it appended to one."""
    webhook_id = await make_webhook(pool, tenant.id)
    task = make_task(webhook_id, tenant.id, 0)
    assert await backlog.park(pool, webhook_id, [task], 0, 1, 0) is True
    assert await backlog.park(pool, webhook_id, [task], 0, 1, 0) is False
    for entry in await backlog.head(pool, webhook_id, 10):
        await backlog.delivered(pool, webhook_id, entry.seq)
    assert await backlog.unpark(pool, webhook_id)
    assert await backlog.park(pool, webhook_id, [], 0, 1, 0) is True  # the next episode


async def test_append_only_while_parked(pool, tenant) -> None:
    """append_many_if_parked writes nothing for an unparked webhook and appends for a parked one."""
    webhook_id = await make_webhook(pool, tenant.id)
    assert not await backlog.append_many_if_parked(
        pool, webhook_id, [make_task(webhook_id, tenant.id, 0)]
    )
    assert await numbers(pool, webhook_id) == []
    await backlog.park(pool, webhook_id, [make_task(webhook_id, tenant.id, 1)], 0, 1, 0)
    assert await backlog.append_many_if_parked(
        pool, webhook_id, [make_task(webhook_id, tenant.id, 2)]
    )
    assert await numbers(pool, webhook_id) == [1, 2]


async def test_unpark_only_when_backlog_is_empty(pool, tenant) -> None:
    """unpark refuses while deliveries wait and succeeds once the backlog is drained."""
    webhook_id = await make_webhook(pool, tenant.id)
    await backlog.park(pool, webhook_id, [make_task(webhook_id, tenant.id, 1)], 0, 1, 0)
    assert not await backlog.unpark(pool, webhook_id)
    [entry] = await backlog.head(pool, webhook_id, 10)
    await backlog.delivered(pool, webhook_id, entry.seq)
    assert await backlog.unpark(pool, webhook_id)
    assert not await backlog.parked_among(pool, [webhook_id])
    assert await backlog.unpark(pool, webhook_id)  # not parked: nothing to wait for
    assert not await backlog.append_many_if_parked(
        pool, webhook_id, [make_task(webhook_id, tenant.id, 2)]
    )


async def test_append_and_unpark_never_strand_a_delivery(pool, tenant) -> None:
    """Racing appends against a drain-and-unpark loop: an appended task is never left unparked."""
    webhook_id = await make_webhook(pool, tenant.id)
    await backlog.park(pool, webhook_id, [], 0, 1, 0)
    appended: list[int] = []
    refused: list[int] = []
    drained: list[int] = []

    async def producer() -> None:
        for n in range(150):
            task = make_task(webhook_id, tenant.id, n)
            (
                appended
                if await backlog.append_many_if_parked(pool, webhook_id, [task])
                else refused
            ).append(n)
            if n % 10 == 0:
                await asyncio.sleep(0)

    async def drainer() -> None:
        while True:
            for entry in await backlog.head(pool, webhook_id, 50):
                await backlog.delivered(pool, webhook_id, entry.seq)
                drained.append(entry.task.event.data["n"])
            if await backlog.unpark(pool, webhook_id):
                return

    await asyncio.gather(producer(), drainer())
    # Whatever was appended was drained before the unpark, in order; nothing remains.
    assert drained == appended
    assert await numbers(pool, webhook_id) == []
    assert sorted(appended + refused) == list(range(150))


async def test_claims_are_disjoint_and_leased(pool, tenant) -> None:
    """Concurrent claims never return the same webhook; a claim pushes next_attempt_at out."""
    now = time.time()
    ids = [await make_webhook(pool, tenant.id) for _ in range(6)]
    for webhook_id in ids:
        await backlog.park(pool, webhook_id, [make_task(webhook_id, tenant.id, 0)], now, 1, now - 1)
    claims = await asyncio.gather(*(backlog.claim_due(pool, now, 60, 2) for _ in range(4)))
    claimed = [p.webhook_id for claim in claims for p in claim]
    assert len(claimed) == len(set(claimed))
    assert set(ids) >= set(claimed)
    assert not set(claimed) & {p.webhook_id for p in await backlog.claim_due(pool, now, 60, 100)}
    due = await backlog.next_due_at(pool)
    assert due is not None and due > now + 59


async def test_disabled_webhooks_are_neither_claimed_nor_due(pool, tenant) -> None:
    """A DISABLED parked webhook is left alone and does not make the scheduler wake up."""
    now = time.time()
    webhook_id = await make_webhook(pool, tenant.id)
    await backlog.park(pool, webhook_id, [make_task(webhook_id, tenant.id, 0)], now, 1, now - 5)
    assert await webhooks.disable_webhook(pool, webhook_id, "410 Gone")
    assert not await webhooks.disable_webhook(pool, webhook_id, "again")
    row = await pool.fetchrow(
        "SELECT state, disabled_reason FROM webhooks WHERE id = $1", webhook_id
    )
    assert (row["state"], row["disabled_reason"]) == ("DISABLED", "410 Gone")
    claimed = await backlog.claim_due(pool, now, 60, 100)
    assert webhook_id not in {p.webhook_id for p in claimed}
    due = await backlog.next_due_at(pool)
    assert due is None or due > now - 5 + 1  # not this webhook's past due time
    await pool.execute("UPDATE webhooks SET state = 'ENABLED' WHERE id = $1", webhook_id)
    claimed = await backlog.claim_due(pool, now, 60, 100)
    assert webhook_id in {p.webhook_id for p in claimed}


async def test_give_up_keeps_the_task_for_replay(pool, tenant) -> None:
    """A given-up delivery leaves the backlog for failed_deliveries, task and reason kept."""
    webhook_id = await make_webhook(pool, tenant.id)
    tasks = [make_task(webhook_id, tenant.id, n) for n in range(2)]
    await backlog.park(pool, webhook_id, tasks, 0, 1, 0)
    head = (await backlog.head(pool, webhook_id, 1))[0]
    await backlog.give_up(pool, head, tenant.id, "retry window exceeded")
    assert await numbers(pool, webhook_id) == [1]
    since = datetime.now(UTC) - timedelta(minutes=1)
    [failed] = await failed_deliveries.failed_since(pool, webhook_id, since, 100)
    assert failed.task == tasks[0]
    assert failed.reason == "retry window exceeded"
    assert await backlog.find_task(pool, webhook_id, tasks[0].event.id) == tasks[0]
    assert await backlog.find_task(pool, webhook_id, tasks[1].event.id) == tasks[1]
    assert await backlog.find_task(pool, webhook_id, "nope") is None
    assert (
        await failed_deliveries.failed_since(pool, webhook_id, since + timedelta(hours=1), 100)
        == []
    )
    assert await failed_deliveries.forget_failed(pool, [failed.id]) == 1
    assert await failed_deliveries.failed_since(pool, webhook_id, since, 100) == []


async def test_reschedule_and_orphans(pool, tenant) -> None:
    """reschedule stores the streak; deleting a webhook lets drop_orphans clear its backlog."""
    webhook_id = await make_webhook(pool, tenant.id)
    await backlog.park(pool, webhook_id, [make_task(webhook_id, tenant.id, 0)], 0, 1, 0)
    await backlog.reschedule(
        pool, webhook_id, failures=9, failing_since=100.0, next_attempt_at=200.0
    )
    row = await pool.fetchrow(
        "SELECT failures, next_attempt_at FROM parked_webhooks WHERE webhook_id = $1", webhook_id
    )
    assert (row["failures"], row["next_attempt_at"].timestamp()) == (9, 200.0)
    await pool.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
    assert await backlog.drop_orphans(pool) >= 1
    assert not await backlog.parked_among(pool, [webhook_id])
    assert await numbers(pool, webhook_id) == []


async def test_leases_and_retry_now(pool, tenant) -> None:
    """A leased webhook is not claimed again; retry_now makes an ENABLED one due at once."""
    now = time.time()
    webhook_id = await make_webhook(pool, tenant.id)
    await backlog.park(pool, webhook_id, [make_task(webhook_id, tenant.id, 0)], now, 1, now + 3600)
    assert await backlog.claim_due(pool, now, 60, 10) == []  # not due yet
    assert await backlog.retry_now(pool, webhook_id, now)
    assert not await backlog.retry_now(pool, webhook_id, now)  # never moves it later
    [claimed] = await backlog.claim_due(pool, now, 60, 10)
    assert claimed.webhook_id == webhook_id
    assert await backlog.claim_due(pool, now, 60, 10) == []  # leased
    assert await backlog.claim_due(pool, now + 61, 60, 10) != []  # the lease ran out
    await backlog.release(pool, webhook_id)
    assert [p.webhook_id for p in await backlog.claim_due(pool, now, 60, 10)] == [webhook_id]
    await backlog.reschedule(pool, webhook_id, failures=2, failing_since=now, next_attempt_at=now)
    assert [p.webhook_id for p in await backlog.claim_due(pool, now, 60, 10)] == [webhook_id]
    await webhooks.disable_webhook(pool, webhook_id, "test")
    await backlog.reschedule(
        pool, webhook_id, failures=2, failing_since=now, next_attempt_at=now + 3600
    )
    assert not await backlog.retry_now(pool, webhook_id, now)  # DISABLED stays put


async def backlog_size(pool, webhook_id: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT backlog_size FROM parked_webhooks WHERE webhook_id = $1::uuid", webhook_id
        )
    )


async def test_a_paused_backlog_past_its_limit_moves_the_oldest_to_failed(pool, tenant) -> None:
    """PAUSED with a limit of 3: the oldest deliveries move to failed (pause_limit), in order."""
    webhook_id = await make_webhook(pool, tenant.id, state="PAUSED")
    now = time.time()
    tasks = [make_task(webhook_id, tenant.id, n) for n in range(5)]
    await backlog.park(pool, webhook_id, tasks[:2], now, 0, now, pause_limit=3)
    assert await backlog.append_many_if_parked(pool, webhook_id, tasks[2:4], pause_limit=3)
    assert await backlog.append_many_if_parked(pool, webhook_id, [tasks[4]], pause_limit=3)
    assert await numbers(pool, webhook_id) == [2, 3, 4]
    assert await backlog_size(pool, webhook_id) == 3
    failed = await failed_deliveries.failed_since(
        pool, webhook_id, datetime.now(UTC) - timedelta(hours=1), 10
    )
    assert [(f.task, f.reason) for f in failed] == [
        (tasks[0], "pause_limit"),
        (tasks[1], "pause_limit"),
    ]


async def test_the_pause_limit_leaves_failing_webhooks_alone(pool, tenant) -> None:
    """An ENABLED webhook parked because its endpoint fails keeps its whole backlog."""
    webhook_id = await make_webhook(pool, tenant.id)
    now = time.time()
    tasks = [make_task(webhook_id, tenant.id, n) for n in range(5)]
    await backlog.park(pool, webhook_id, tasks, now, 3, now + 60, pause_limit=3)
    assert await numbers(pool, webhook_id) == [0, 1, 2, 3, 4]
    assert await backlog_size(pool, webhook_id) == 5


async def test_the_backlog_counter_follows_every_delete(pool, tenant) -> None:
    """Drained runs and give-ups lower the counter, so the limit counts what is left."""
    webhook_id = await make_webhook(pool, tenant.id, state="PAUSED")
    now = time.time()
    tasks = [make_task(webhook_id, tenant.id, n) for n in range(8)]
    await backlog.park(pool, webhook_id, tasks[:4], now, 0, now, pause_limit=4)
    entries = await backlog.head(pool, webhook_id, 4)
    await backlog.delivered_through(pool, webhook_id, entries[1].seq)
    await backlog.give_up(pool, entries[2], tenant.id, "gave up")
    assert await backlog_size(pool, webhook_id) == 1
    assert await backlog.append_many_if_parked(pool, webhook_id, tasks[4:8], pause_limit=4)
    assert await numbers(pool, webhook_id) == [4, 5, 6, 7]  # 3 was the oldest of five
    assert await backlog_size(pool, webhook_id) == 4
    failed = await failed_deliveries.failed_since(
        pool, webhook_id, datetime.now(UTC) - timedelta(hours=1), 10
    )
    assert [(f.task.event.data["n"], f.reason) for f in failed] == [
        (2, "gave up"),
        (3, "pause_limit"),
    ]
