"""The Worker with a scripted sender and targets on real Postgres: ordering, caps,
fairness, failures, parking.

No broker: these pin down the scheduling rules and read what the worker wrote to
Postgres (backlog, failed deliveries, webhook rows); the integration tests in
``test_pipeline*.py`` and ``test_deliverer_recovery.py`` run the whole process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from dispatcher.deliverer.target_cache import TargetCache
from dispatcher.deliverer.worker import STUCK_AFTER_S, STUCK_RECOUNT_S, Worker
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.failures import BlockedDestination
from dispatcher.delivery.http.sender import Response
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import Settings
from dispatcher.store import backlog, db
from dispatcher.subscription.retry_override import RetryOverride
from tests.support.pipeline import wait_until

TP = TopicPartition("deliveries", 0)
# Webhook ids are uuids (Postgres keys); tests name webhooks, ``wid`` maps the names,
# afresh for every harness (nothing left by an earlier test is seen).
_namespace = [uuid.uuid4()]


def wid(name: str) -> str:
    """The webhook id of the test webhook called ``name`` in the current harness."""
    return str(uuid.uuid5(_namespace[0], name))


@dataclass
class FakeSender:
    """Records every send; ``answer(webhook_path, event_id)`` returns a status or raises."""

    answer: Callable[[str, str], Awaitable[int]] | None = None
    sent: list[tuple[str, str]] = field(default_factory=list)  # (url, event id)
    in_flight: int = 0
    max_in_flight: int = 0
    max_per_url: dict[str, int] = field(default_factory=dict)
    _per_url: dict[str, int] = field(default_factory=dict)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        event_id = orjson.loads(body)["id"]
        self.sent.append((url, event_id))
        self.in_flight += 1
        self._per_url[url] = self._per_url.get(url, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_url[url] = max(self.max_per_url.get(url, 0), self._per_url[url])
        try:
            status = 200 if self.answer is None else await self.answer(url, event_id)
            await asyncio.sleep(0.001)
            return Response(status)
        finally:
            self.in_flight -= 1
            self._per_url[url] -= 1

    def delivered_to(self, url: str) -> list[str]:
        return [event_id for u, event_id in self.sent if u == url]


def _target(name: str, **changes: object) -> WebhookTarget:
    """A target called ``name`` (the harness gives it its uuid)."""
    values: dict[str, object] = {
        "id": name,
        "tenant_id": "tenant",
        "url": f"http://127.0.0.1:9/{name}",
        "secrets": ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",),
    }
    values.update(changes)
    return WebhookTarget(**values)  # type: ignore[arg-type]


@dataclass
class Harness:
    worker: Worker
    sender: FakeSender
    pool: asyncpg.Pool
    targets: dict[str, WebhookTarget | None]
    logs: list[MutableMapping[str, Any]]
    offset: int = 0

    def submit(self, name: str, event_id: str, partition: TopicPartition = TP) -> int:
        self.offset += 1
        event = Event(event_id, "T", "tenant", 0, {})
        self.worker.submit(DeliveryTask(wid(name), event), partition, self.offset)
        return self.offset

    def position(self, partition: TopicPartition = TP) -> int | None:
        """The partition's commit position now (None: no progress yet)."""
        return self.worker.partitions.committable().get(partition)

    async def parked(self, name: str) -> bool:
        """Whether the webhook is parked in Postgres."""
        return bool(await backlog.parked_among(self.pool, [wid(name)]))

    async def backlog(self, name: str) -> list[str]:
        """The event ids in the webhook's Postgres backlog, in order."""
        rows = await self.pool.fetch(
            "SELECT event_id FROM backlog WHERE webhook_id = $1 ORDER BY seq", uuid.UUID(wid(name))
        )
        return [row["event_id"] for row in rows]

    async def failed(self, name: str) -> list[tuple[str, str]]:
        """(event id, reason) of the webhook's failed deliveries, in order."""
        rows = await self.pool.fetch(
            "SELECT event_id, reason FROM failed_deliveries WHERE webhook_id = $1 ORDER BY id",
            uuid.UUID(wid(name)),
        )
        return [(row["event_id"], row["reason"]) for row in rows]

    async def park(self, name: str, event_ids: list[str]) -> None:
        """Park the webhook with ``event_ids`` as another deliverer would have."""
        tasks = [DeliveryTask(wid(name), Event(e, "T", "tenant", 0, {})) for e in event_ids]
        await backlog.park(self.pool, wid(name), tasks, 0.0, 1, 4e9)

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        """The log lines named ``name`` so far."""
        return [line for line in self.logs if line["event"] == name]


@contextlib.asynccontextmanager
async def harness(
    settings: Settings,
    targets: dict[str, WebhookTarget | None],
    sender: FakeSender | None = None,
    **worker_options: Any,
) -> AsyncIterator[Harness]:
    sender = sender or FakeSender()
    _namespace[0] = uuid.uuid4()
    by_id = {
        wid(name): None if target is None else dataclasses.replace(target, id=wid(name))
        for name, target in targets.items()
    }

    async def load(webhook_id: str) -> WebhookTarget | None:
        return by_id.get(webhook_id)

    pool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    worker = Worker(settings, sender, TargetCache(load), pool, **worker_options)
    running = asyncio.create_task(worker.run())
    try:
        with capture_logs() as logs:
            yield Harness(worker, sender, pool, targets, logs)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close(grace_s=1)
        await pool.close()


async def _has(rows: Awaitable[list[Any]], count: int) -> bool:
    return len(await rows) == count


async def _equals(rows: Awaitable[list[Any]], expected: list[Any]) -> bool:
    return await rows == expected


def _url(name: str) -> str:
    return f"http://127.0.0.1:9/{name}"


async def test_ordered_lane_sends_one_at_a_time_in_order(settings: Settings) -> None:
    """An ordered webhook never has two requests in flight and receives in offset order."""
    async with harness(settings, {"w": _target("w")}) as h:
        ids = [f"e{n}" for n in range(30)]
        for event_id in ids:
            h.submit("w", event_id)
        await wait_until(lambda: len(h.sender.sent) == 30, within=10)
        await wait_until(lambda: h.position() == h.offset + 1, within=10)
    assert h.sender.delivered_to(_url("w")) == ids
    assert h.sender.max_per_url[_url("w")] == 1
    assert h.worker.outstanding == 0


async def test_unordered_lane_is_capped_by_its_limit_and_the_setting(settings: Settings) -> None:
    """Unordered: several in flight, at most min(webhook max_in_flight, per-webhook setting)."""

    async def slow(_url: str, _event: str) -> int:
        await asyncio.sleep(0.02)
        return 200

    settings = settings.replace(max_in_flight_per_webhook=3)
    targets: dict[str, WebhookTarget | None] = {
        "w": _target("w", ordering="unordered", max_in_flight=10)
    }
    async with harness(settings, targets, FakeSender(answer=slow)) as h:
        for n in range(30):
            h.submit("w", f"e{n}")
        await wait_until(lambda: len(h.sender.sent) == 30, within=10)
    assert h.sender.max_per_url[_url("w")] == 3


async def test_global_cap_bounds_all_lanes_together(settings: Settings) -> None:
    """The global in-flight cap holds across many webhooks."""

    async def slow(_url: str, _event: str) -> int:
        await asyncio.sleep(0.01)
        return 200

    settings = settings.replace(max_in_flight=4)
    targets: dict[str, WebhookTarget | None] = {f"w{n}": _target(f"w{n}") for n in range(10)}
    async with harness(settings, targets, FakeSender(answer=slow)) as h:
        for round_no in range(5):
            for n in range(10):
                h.submit(f"w{n}", f"e{n}-{round_no}")
        await wait_until(lambda: len(h.sender.sent) == 50, within=10)
    assert h.sender.max_in_flight == 4


async def test_round_robin_a_busy_webhook_does_not_starve_a_quiet_one(settings: Settings) -> None:
    """A webhook with one delivery gets its turn right after the busy webhook's current one."""
    gate = asyncio.Event()

    async def gated(_url: str, _event: str) -> int:
        await gate.wait()
        return 200

    settings = settings.replace(max_in_flight=1)
    targets: dict[str, WebhookTarget | None] = {
        "busy": _target("busy", ordering="unordered", max_in_flight=16),
        "quiet": _target("quiet"),
    }
    async with harness(settings, targets, FakeSender(answer=gated)) as h:
        for n in range(50):
            h.submit("busy", f"b{n}")
        await wait_until(lambda: len(h.sender.sent) == 1, within=5)
        h.submit("quiet", "q0")
        # Postgres said the new lane is not parked: it waits for its turn now.
        await wait_until(lambda: len(h.events("lane.parked_checked")) == 2, within=5)
        gate.set()
        await wait_until(lambda: len(h.sender.sent) == 51, within=10)
    order = [event_id for _url, event_id in h.sender.sent]
    assert order.index("q0") <= 2


async def test_failing_head_is_retried_before_anything_behind_it(settings: Settings) -> None:
    """An ordered lane retries its failing head with backoff; later events wait for it."""
    failures = {"e0": 3}

    async def flaky(_url: str, event_id: str) -> int:
        if failures.get(event_id, 0) > 0:
            failures[event_id] -= 1
            return 503
        return 200

    async with harness(settings, {"w": _target("w")}, FakeSender(answer=flaky)) as h:
        for n in range(3):
            h.submit("w", f"e{n}")
        await wait_until(lambda: len(h.sender.sent) == 6, within=10)
        await wait_until(lambda: h.position() == 4, within=10)
    assert h.sender.delivered_to(_url("w")) == ["e0", "e0", "e0", "e0", "e1", "e2"]


async def test_lane_failing_past_the_window_is_parked_and_later_deliveries_append(
    settings: Settings,
) -> None:
    """Past park_after the lane moves to the backlog in order; offsets advance; new ones append."""

    async def down(_url: str, _event: str) -> int:
        return 500

    settings = settings.replace(retry_schedule=(0.05, 0.05, 0.05, 1.0), park_after=0.2)
    async with harness(settings, {"w": _target("w")}, FakeSender(answer=down)) as h:
        for n in range(5):
            h.submit("w", f"e{n}")
        await wait_until(lambda: h.parked("w"), within=10)
        await wait_until(lambda: h.position() == 6, within=5)
        h.submit("w", "e5")
        await wait_until(lambda: _has(h.backlog("w"), 6), within=5)
        sends = len(h.sender.sent)
        await asyncio.sleep(0.3)
        assert len(h.sender.sent) == sends  # parked: the lane sends nothing itself
        # the scheduler drained and unparked it: the next delivery goes out from memory
        await h.pool.execute("DELETE FROM parked_webhooks WHERE webhook_id = $1", wid("w"))
        h.sender.answer = None
        h.submit("w", "e6")
        await wait_until(lambda: h.sender.delivered_to(_url("w"))[-1:] == ["e6"], within=5)
        assert await h.backlog("w") == [f"e{n}" for n in range(6)]
    assert set(h.sender.delivered_to(_url("w"))) == {"e0", "e6"}


async def test_disabled_webhook_deliveries_are_kept_in_the_backlog(settings: Settings) -> None:
    """Deliveries for a DISABLED webhook are parked (re-enabling resumes), never sent."""
    async with harness(settings, {"w": _target("w", state="DISABLED")}) as h:
        for n in range(3):
            h.submit("w", f"e{n}")
        await wait_until(lambda: _has(h.backlog("w"), 3), within=5)
        await wait_until(lambda: h.position() == 4, within=5)
        assert await h.backlog("w") == ["e0", "e1", "e2"]
    assert h.sender.sent == []


async def test_deleted_webhook_deliveries_finish_without_a_request(settings: Settings) -> None:
    """A task whose webhook no longer exists is finished (its offset commits) and not sent."""
    async with harness(settings, {}) as h:
        h.submit("gone", "e0")
        await wait_until(lambda: h.position() == 2, within=5)
        assert await h.backlog("gone") == [] and not await h.parked("gone")
    assert h.sender.sent == []


async def test_gone_disables_and_blocked_gives_up(settings: Settings) -> None:
    """410 disables the webhook and parks its deliveries; a blocked destination is given up."""

    async def answer(url: str, _event: str) -> int:
        if url.endswith("/gone"):
            return 410
        raise BlockedDestination("10.0.0.1 is private")

    targets: dict[str, WebhookTarget | None] = {
        "gone": _target("gone"),
        "blocked": _target("blocked"),
    }
    async with harness(settings, targets, FakeSender(answer=answer)) as h:
        h.submit("gone", "g0")
        h.submit("gone", "g1")
        h.submit("blocked", "b0")
        await wait_until(lambda: h.position() == 4, within=5)
        assert await h.backlog("gone") == ["g0", "g1"]
        assert [event_id for event_id, _ in await h.failed("blocked")] == ["b0"]
    (disabled,) = h.events("webhook.disabled")
    assert disabled["webhook_id"] == wid("gone") and "410" in disabled["reason"]


async def test_revoked_partition_drops_pending_work_without_finishing_it(
    settings: Settings,
) -> None:
    """Revocation drops queued deliveries of that partition; their offsets are not finished."""
    gate = asyncio.Event()

    async def gated(_url: str, _event: str) -> int:
        await gate.wait()
        return 200

    other = TopicPartition("deliveries", 1)
    targets: dict[str, WebhookTarget | None] = {"a": _target("a"), "b": _target("b")}
    async with harness(settings, targets, FakeSender(answer=gated)) as h:
        for n in range(3):
            h.submit("a", f"a{n}", TP)
        h.submit("b", "b0", other)
        await wait_until(lambda: len(h.sender.sent) == 2, within=5)
        dropped = h.worker.revoke({TP})
        gate.set()
        assert await h.worker.partitions.wait_in_flight({TP}, within=5)
        committable = h.worker.partitions.committable()
        await wait_until(lambda: h.position(other) is not None, within=5)
    assert dropped == 2  # a1, a2 (a0 was in flight and finished)
    assert committable.get(TP) == 2  # a0 done; a1 and a2 stay for the next owner
    assert "a1" not in [event_id for _url, event_id in h.sender.sent]


@pytest.mark.parametrize("kind", ["event", "redelivery"])
async def test_task_kinds_are_delivered_alike(settings: Settings, kind: str) -> None:
    """Redeliveries travel the same lanes as events."""
    async with harness(settings, {"w": _target("w")}) as h:
        event = Event("e0", "T", "tenant", 0, {})
        h.worker.submit(DeliveryTask(wid("w"), event, kind), TP, 1)  # type: ignore[arg-type]
        await wait_until(lambda: len(h.sender.sent) == 1, within=5)


async def test_a_failing_target_load_delays_only_that_lane(settings: Settings) -> None:
    """If Postgres cannot load a webhook, its lane retries shortly; other lanes keep going."""
    sender = FakeSender()
    attempts = {"broken": 0}
    broken, fine = str(uuid.uuid4()), str(uuid.uuid4())

    async def load(webhook_id: str) -> WebhookTarget | None:
        if webhook_id == broken:
            attempts["broken"] += 1
            if attempts["broken"] == 1:
                raise OSError("connection refused")
        return _target(webhook_id)

    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    worker = Worker(settings, sender, TargetCache(load), pool)
    running = asyncio.create_task(worker.run())
    try:
        event = Event("e-broken", "T", "tenant", 0, {})
        worker.submit(DeliveryTask(broken, event), TP, 1)
        worker.submit(DeliveryTask(fine, Event("e-fine", "T", "tenant", 0, {})), TP, 2)
        await wait_until(lambda: len(sender.sent) == 2, within=10)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await pool.close()
    assert [event_id for _url, event_id in sender.sent] == ["e-fine", "e-broken"]


async def test_a_rewound_partition_starts_a_fresh_tracker(settings: Settings) -> None:
    """Offsets read again from an earlier position replace the stale queue instead of failing."""
    gate = asyncio.Event()

    async def gated(_url: str, _event: str) -> int:
        await gate.wait()
        return 200

    async with harness(settings, {"w": _target("w")}, FakeSender(answer=gated)) as h:
        for offset in (10, 11, 12):
            h.worker.submit(
                DeliveryTask(wid("w"), Event(f"e{offset}", "T", "t", 0, {})), TP, offset
            )
        await wait_until(lambda: len(h.sender.sent) == 1, within=5)
        for offset in (11, 12):  # re-read after a rebalance
            h.worker.submit(
                DeliveryTask(wid("w"), Event(f"e{offset}", "T", "t", 0, {})), TP, offset
            )
        gate.set()
        await wait_until(lambda: h.position() == 13, within=5)
    assert [event_id for _url, event_id in h.sender.sent] == ["e10", "e11", "e12"]


async def test_an_internal_error_gives_the_delivery_up_and_the_lane_goes_on(
    settings: Settings,
) -> None:
    """An exception inside Hooklane records the delivery as failed instead of wedging the lane."""

    async def answer(_url: str, event_id: str) -> int:
        if event_id == "poison":
            raise RuntimeError("boom")
        return 200

    async with harness(settings, {"w": _target("w")}, FakeSender(answer=answer)) as h:
        h.submit("w", "poison")
        h.submit("w", "fine")
        await wait_until(lambda: h.position() == 3, within=5)
        failed = await h.failed("w")
    assert [event_id for event_id, _ in failed] == ["poison"]
    assert "internal error" in failed[0][1]
    (logged,) = h.events("delivery.internal_error")
    assert logged["webhook_id"] == wid("w")
    assert h.sender.delivered_to(_url("w")) == ["poison", "fine"]


async def test_a_failing_lane_holding_too_much_parks_before_park_after(settings: Settings) -> None:
    """A failing endpoint with a long queue is parked early; a healthy lane is unaffected."""

    async def answer(url: str, _event: str) -> int:
        return 500 if url.endswith("/down") else 200

    settings = settings.replace(park_after=60.0, retry_schedule=(0.05, 5.0))
    targets: dict[str, WebhookTarget | None] = {"down": _target("down"), "up": _target("up")}
    async with harness(settings, targets, FakeSender(answer=answer), park_early_above=5) as h:
        for n in range(10):
            h.submit("down", f"d{n}")
            h.submit("up", f"u{n}")
        await wait_until(lambda: _has(h.backlog("down"), 10), within=10)
        await wait_until(lambda: h.position() == 21, within=10)
        assert await h.backlog("down") == [f"d{n}" for n in range(10)]
    assert h.sender.delivered_to(_url("up")) == [f"u{n}" for n in range(10)]
    assert set(h.sender.delivered_to(_url("down"))) == {"d0"}


async def test_webhook_parked_by_the_previous_owner_appends_to_its_backlog(
    settings: Settings,
) -> None:
    """A lane of a webhook parked elsewhere sends nothing: its deliveries go behind the backlog."""
    async with harness(settings, {"w": _target("w"), "ok": _target("ok")}) as h:
        await h.park("w", ["older"])
        for n in range(3):
            h.submit("w", f"e{n}")
            h.submit("ok", f"o{n}")
        await wait_until(lambda: _has(h.backlog("w"), 4), within=5)
        await wait_until(lambda: len(h.sender.sent) == 3, within=5)
        await wait_until(lambda: h.position() == h.offset + 1, within=5)
        assert await h.backlog("w") == ["older", "e0", "e1", "e2"]
    assert h.sender.delivered_to(_url("w")) == []
    # One query for the batch, not one per delivery.
    assert [(c["lanes"], c["parked"]) for c in h.events("lane.parked_checked")] == [(2, 1)]


async def test_after_a_revocation_the_parked_state_is_asked_again(settings: Settings) -> None:
    """A partition that comes back may have been parked by another owner: the lane asks again."""
    async with harness(settings, {"w": _target("w")}) as h:
        h.submit("w", "e0")
        await wait_until(lambda: h.sender.delivered_to(_url("w")) == ["e0"], within=5)
        await wait_until(lambda: wid("w") not in h.worker.lanes, within=5)
        h.submit("w", "e1")  # known as not parked while the partition stays here
        await wait_until(lambda: h.sender.delivered_to(_url("w")) == ["e0", "e1"], within=5)
        assert len(h.events("lane.parked_checked")) == 1
        h.worker.revoke([TP])
        h.worker.partitions.forget([TP])
        await h.park("w", ["e2"])  # the other owner parked it meanwhile
        h.submit("w", "e3")
        await wait_until(lambda: _equals(h.backlog("w"), ["e2", "e3"]), within=5)
    assert h.sender.delivered_to(_url("w")) == ["e0", "e1"]
    assert len(h.events("lane.parked_checked")) == 2


async def test_lane_waits_while_postgres_cannot_tell_whether_it_is_parked(
    settings: Settings,
) -> None:
    """When the parked check fails nothing is sent; it is retried and then delivers."""
    async with harness(settings, {"w": _target("w")}) as h:
        # Postgres refuses the query (the table is away) until it is back.
        await h.pool.execute("ALTER TABLE parked_webhooks RENAME TO parked_webhooks_away")
        try:
            h.submit("w", "e0")
            await wait_until(lambda: bool(h.events("lane.parked_check_failed")), within=5)
            assert h.sender.sent == []
        finally:
            await h.pool.execute("ALTER TABLE parked_webhooks_away RENAME TO parked_webhooks")
        await wait_until(lambda: h.sender.delivered_to(_url("w")) == ["e0"], within=5)
        assert len(h.events("lane.parked_check_failed")) == 1


async def test_a_rate_limited_lane_waits_without_holding_the_global_slot(
    settings: Settings,
) -> None:
    """With one global slot, a 2/s webhook's waits let an unlimited one send all it has."""
    settings = settings.replace(max_in_flight=1)
    targets: dict[str, WebhookTarget | None] = {
        "slow": _target("slow", rate_limit=2.0),
        "free": _target("free"),
    }
    attempts: list[str] = []
    async with harness(
        settings, targets, on_attempt=lambda result: attempts.append(result.webhook_id)
    ) as h:
        for n in range(3):
            h.submit("slow", f"s{n}")
        for n in range(20):
            h.submit("free", f"f{n}")
        await wait_until(lambda: len(h.sender.sent) == 23, within=10)
    urls = [url for url, _ in h.sender.sent]
    last_free = max(index for index, url in enumerate(urls) if url == _url("free"))
    third_slow = [index for index, url in enumerate(urls) if url == _url("slow")][2]
    assert last_free < third_slow
    # Waiting is not attempting: one attempt per delivery, none while paced.
    assert attempts.count(wid("slow")) == 3
    assert h.sender.delivered_to(_url("slow")) == ["s0", "s1", "s2"]


async def test_a_retry_override_decides_the_lanes_give_up(settings: Settings) -> None:
    """A webhook's own 50 ms retry window gives a failing delivery up long before park_after."""

    async def down(_url: str, _event: str) -> int:
        return 500

    targets: dict[str, WebhookTarget | None] = {
        "w": _target("w", retry=RetryOverride((0.01,), 0.05))
    }
    async with harness(settings, targets, FakeSender(answer=down)) as h:
        h.submit("w", "e1")
        await wait_until(lambda: _has(h.failed("w"), 1), within=settings.park_after)
        failed = await h.failed("w")
        assert not await h.parked("w")
    assert failed[0][0] == "e1"
    assert failed[0][1].startswith("retry window exceeded")


def reported(h: Harness) -> list[int]:
    """The windows written to the webhook row of "w", in order."""
    lines = h.events("lane.window_reported")
    return [line["window"] for line in lines if line["webhook_id"] == wid("w")]


async def test_an_unordered_lanes_window_grows_to_its_ceiling_and_is_reported(
    settings: Settings,
) -> None:
    """Against a fast receiver the window reaches max_in_flight; the last value is reported."""

    async def fast(_url: str, _event: str) -> int:
        await asyncio.sleep(0.005)
        return 200

    targets: dict[str, WebhookTarget | None] = {
        "w": _target("w", ordering="unordered", max_in_flight=4)
    }
    async with harness(settings, targets, FakeSender(answer=fast)) as h:
        for n in range(60):
            h.submit("w", f"e{n}")
        await wait_until(lambda: reported(h)[-1:] == [4], within=10)
    assert h.sender.max_per_url[_url("w")] == 4
    # Reports are throttled: a handful of writes, not one per answer.
    assert len(reported(h)) <= 3


async def test_an_idle_rate_limited_lane_is_kept_until_its_bucket_is_full(
    settings: Settings,
) -> None:
    """A lane forgotten at once would forget its last request; it goes once the bucket refills."""
    targets: dict[str, WebhookTarget | None] = {"w": _target("w", rate_limit=0.5)}
    async with harness(settings, targets) as h:
        h.submit("w", "e0")
        await wait_until(lambda: h.worker.outstanding == 0, within=5)
        assert wid("w") in h.worker.lanes  # idle, but its next request is not due for 2 s
        h.submit("w", "e1")
        await wait_until(lambda: h.worker.outstanding == 0, within=5)
        await wait_until(lambda: wid("w") not in h.worker.lanes, within=5)
    assert h.sender.delivered_to(_url("w")) == ["e0", "e1"]


async def test_deliveries_behind_a_stuck_request_are_counted_apart(settings: Settings) -> None:
    """``stuck_pending``: what waits behind a request in flight for STUCK_AFTER_S or more
    (a hanging endpoint), not what waits behind a quick one or in an idle lane."""
    now = [1000.0]
    release = asyncio.Event()

    async def answer(url: str, _event: str) -> int:
        if url.endswith("/hang"):
            await release.wait()
        return 200

    targets: dict[str, WebhookTarget | None] = {"hang": _target("hang"), "ok": _target("ok")}
    async with harness(settings, targets, FakeSender(answer=answer), clock=lambda: now[0]) as h:
        for n in range(40):
            h.submit("hang", f"h{n}")
        for n in range(10):
            h.submit("ok", f"o{n}")
        await wait_until(lambda: len(h.sender.delivered_to(_url("ok"))) == 10, within=10)
        assert h.worker.stuck_pending() == 0  # in flight, but not for long yet
        now[0] += STUCK_AFTER_S + STUCK_RECOUNT_S
        assert h.worker.stuck_pending() == 39  # the 40th is the request in flight
        release.set()
        await wait_until(lambda: len(h.sender.delivered_to(_url("hang"))) == 40, within=10)
        now[0] += STUCK_RECOUNT_S
        assert h.worker.stuck_pending() == 0
        assert h.sender.delivered_to(_url("hang")) == [f"h{n}" for n in range(40)]
