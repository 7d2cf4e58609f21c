"""Admission of a router poll: pure bookkeeping, and the events table's verdicts (real Postgres)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from structlog.testing import capture_logs

from dispatcher.messages.wire import Event
from dispatcher.router.ingest import (
    DUPLICATE,
    Ingest,
    Rejected,
    Verdict,
    first_of_each,
    verdicts_after_recording,
)
from dispatcher.settings import Settings
from dispatcher.store import db
from dispatcher.store import events as event_store

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
WINDOW = 86400.0


def event(event_id: str, tenant_id: str = "ten_a") -> Event:
    return Event(event_id, TOPIC, tenant_id, 1, {"registration_id": event_id})


@pytest.mark.parametrize(
    ("keys", "firsts"),
    [
        ([], []),
        ([("t", "a"), ("t", "b")], [0, 1]),
        ([("t", "a"), ("t", "a"), ("t", "b")], [0, 2]),
        ([None, ("t", "a"), None, ("t", "a")], [1]),
        ([("t", "a"), ("u", "a")], [0, 1]),  # the same id of two tenants: two events
    ],
)
def test_first_of_each_keeps_the_first_occurrence_of_every_key(keys, firsts):
    """A poll's repeats of one (tenant, id) are reduced to the first; non-events are skipped."""
    assert first_of_each(keys) == firsts


def test_verdicts_route_only_admitted_first_occurrences():
    """Admitted firsts are routed; repeats and refused firsts are duplicates; rejections stay."""
    a, b, rejected = event("a"), event("b"), Rejected("bad")
    decoded: list[Verdict] = [a, rejected, a, b]
    assert verdicts_after_recording(decoded, [0, 3], {("ten_a", "a")}) == [
        a,
        rejected,
        DUPLICATE,
        DUPLICATE,
    ]


def test_payload_round_trips_compressed():
    """The stored form of data decodes to the same object and is smaller for repetitive JSON."""
    data = {"registration_id": "reg_1", "reasons": ["missing address"] * 20}
    packed = event_store.pack(data)
    assert event_store.unpack(packed) == data
    assert len(packed) < len(str(data))


async def record(pool: asyncpg.Pool, item: Event, source: str, window: float = WINDOW) -> bool:
    admitted = await event_store.record_routed(pool, [event_store.Incoming(item, source)], window)
    return (item.tenant_id, item.id) in admitted


async def test_a_repeat_from_another_position_is_a_duplicate(pool):
    """The same (tenant, id) read from a second position within the window is not routed."""
    item = event(uuid.uuid4().hex)
    assert await record(pool, item, "t:0:1")
    assert not await record(pool, item, "t:0:2")
    assert not await record(pool, item, "t:3:1")


async def test_the_same_position_read_again_is_routed_again(pool):
    """A record re-read after a crash or a failed send (same position) is routed again."""
    item = event(uuid.uuid4().hex)
    assert await record(pool, item, "t:0:7")
    assert await record(pool, item, "t:0:7")


async def test_the_same_id_of_another_tenant_is_another_event(pool):
    """Tenants never deduplicate against each other."""
    event_id = uuid.uuid4().hex
    assert await record(pool, event(event_id, "ten_a"), "t:0:1")
    assert await record(pool, event(event_id, "ten_b"), "t:0:2")


async def test_an_id_older_than_the_window_is_routed_again(pool):
    """Outside the dedup window the id is a new event (and the row records the new position)."""
    item = event(uuid.uuid4().hex)
    assert await record(pool, item, "t:0:1")
    await pool.execute(
        "UPDATE events SET routed_at = now() - interval '2 hours' WHERE event_id = $1", item.id
    )
    assert await record(pool, item, "t:0:9", window=3600.0)
    assert not await record(pool, item, "t:0:10", window=3600.0)


async def test_an_api_claim_is_taken_over_once(pool):
    """POST /events' claim is routed by the first router record, then repeats are duplicates."""
    item = event(uuid.uuid4().hex)
    assert await event_store.claim(pool, item, WINDOW)
    assert not await event_store.claim(pool, item, WINDOW)
    assert not await event_store.is_routed(pool, item.tenant_id, item.id)
    assert await record(pool, item, "t:1:4")
    assert await event_store.is_routed(pool, item.tenant_id, item.id)
    assert not await record(pool, item, "t:1:5")
    assert not await event_store.claim(pool, item, WINDOW)


async def test_a_released_claim_can_be_claimed_again(pool):
    """A claim whose publish failed is released, so the producer's retry is a first publish."""
    item = event(uuid.uuid4().hex)
    assert await event_store.claim(pool, item, WINDOW)
    await event_store.release_claim(pool, item.tenant_id, item.id)
    assert await event_store.claim(pool, item, WINDOW)


async def test_one_statement_records_a_poll(pool):
    """A poll of several events is one call; only the new ones come back admitted."""
    old, new = event(uuid.uuid4().hex), event(uuid.uuid4().hex)
    assert await record(pool, old, "t:0:1")
    admitted = await event_store.record_routed(
        pool,
        [event_store.Incoming(old, "t:0:2"), event_store.Incoming(new, "t:0:3")],
        WINDOW,
    )
    assert admitted == {(new.tenant_id, new.id)}
    stored = await event_store.get_event(pool, new.tenant_id, new.id)
    assert stored == new


async def test_purge_drops_only_events_older_than_the_retention(pool):
    """Rows routed before the kept period go; recent ones (and their dedup) stay."""
    old, recent = event(uuid.uuid4().hex), event(uuid.uuid4().hex)
    assert await record(pool, old, "t:0:1")
    assert await record(pool, recent, "t:0:2")
    await pool.execute(
        "UPDATE events SET routed_at = now() - interval '31 days' WHERE event_id = $1", old.id
    )
    assert await event_store.purge(pool, 30 * 86400.0) >= 1
    assert await event_store.get_event(pool, old.tenant_id, old.id) is None
    assert await event_store.get_event(pool, recent.tenant_id, recent.id) == recent


class Record:
    """The fields of a ConsumerRecord that admission reads."""

    def __init__(self, value: bytes, offset: int) -> None:
        self.topic, self.partition, self.offset, self.value = f"p.{TOPIC}", 0, offset, value
        self.headers: tuple[tuple[str, bytes], ...] = ()


async def test_without_its_table_the_router_routes_every_valid_event(database_url):
    """A failing store is logged and admission routes all valid events (at-least-once)."""
    url = database_url.rsplit("/", 1)[0] + f"/hooklane_ingest_{uuid.uuid4().hex[:8]}"
    await db.migrate(url)
    settings = Settings(database_url=url, topic_prefix="p.", validate_events=True)

    async def known(_topic: str) -> bool:
        return True

    ingest = Ingest(settings, known)
    await ingest.start()
    try:
        await ingest.admit([])  # loads the schemas
        admin = await db.create_pool(url, min_size=1, max_size=1)
        await admin.execute("DROP TABLE events")
        await admin.close()
        item = event(uuid.uuid4().hex)
        records = [Record(item.to_message(), 1), Record(item.to_message(), 2), Record(b"{", 3)]
        with capture_logs() as logs:
            verdicts = await ingest.admit(records)
    finally:
        await ingest.stop()
        await db.drop_database(url)
    assert verdicts[:2] == [item, DUPLICATE]  # a poll's own repeat is still dropped
    assert isinstance(verdicts[2], Rejected)
    assert any(entry["event"] == "ingest.store_unavailable" for entry in logs)
