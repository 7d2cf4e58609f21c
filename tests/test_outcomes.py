"""The one executor of the policy's steps (``dispatcher.deliverer.outcomes``), table-tested.

Every ``Outcome`` is carried out for a delivery of an in-memory lane (``LaneHolding``)
and for the head of a parked webhook's backlog (``BacklogHolding``), against real
Postgres, and observed where a user would see it: metrics, log lines, announcements,
the webhook row, the backlog and the failed deliveries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from dispatcher.deliverer.announcer import Announcer
from dispatcher.deliverer.lane import Lane, Pending, Where
from dispatcher.deliverer.outcomes import Holding, Outcomes
from dispatcher.deliverer.parking import LaneHolding, Parking
from dispatcher.deliverer.partitions import OffsetTracker
from dispatcher.deliverer.scheduler import BacklogHolding
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.policy import DELIVERED, Outcome, Step
from dispatcher.messages import operational
from dispatcher.messages.wire import DeliveryTask
from dispatcher.ops.metrics import DelivererMetrics, build_registry
from dispatcher.store import backlog
from dispatcher.store.webhook_targets import load_target
from tests.conftest import TenantKey
from tests.support.failure import BOX, clean_backlog, make_result, make_task, make_webhook
from tests.test_announcer import Published

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)

TP = TopicPartition("deliveries", 0)
NOW = time.time()
GONE = "the endpoint answered 410 Gone"
WINDOW = "retry window exceeded; last error: HTTP 500"

STEPS = {
    Outcome.DELIVERED: DELIVERED,
    Outcome.RETRY: Step(Outcome.RETRY, NOW + 5, None, 1, NOW),
    Outcome.PARK: Step(Outcome.PARK, NOW + 300, None, 7, NOW - 100),
    Outcome.GIVE_UP: Step(Outcome.GIVE_UP, None, WINDOW, 9, NOW - 100),
    Outcome.DISABLE: Step(Outcome.DISABLE, None, GONE, 3, NOW - 100),
}


@dataclass
class Seen:
    """What a user can observe after one step was carried out."""

    counted: dict[str, float]  # deliveries_total by outcome
    announced: set[str]  # operational topics published
    logged: set[str]  # the executor's own log events (besides the attempt's line)
    webhook_state: str
    backlog: int  # deliveries of the webhook in the Postgres backlog
    failed: list[str]  # reasons recorded in failed_deliveries
    finished: bool  # lane: the offset may be committed; backlog: the entry left it
    waits_for: float | None  # when the delivery is tried again (None: it is not)


@dataclass
class Expected:
    counted: dict[str, float] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)
    logged: set[str] = field(default_factory=set)
    webhook_state: str = "ENABLED"
    backlog: int = 0
    failed: list[str] = field(default_factory=list)
    finished: bool = False
    waits_for: float | None = None


ATTEMPT_LINES = {"delivery.succeeded", "delivery.failed"}
LOGGED = {"delivery.gave_up", "webhook.disabled", "webhook.disable_failed", "lane.parked"}

# (holder, outcome) -> what is seen. A lane's delivery starts in memory; a backlog
# task starts as the head of its webhook's backlog (one delivery).
TABLE: dict[tuple[str, Outcome], Expected] = {
    ("lane", Outcome.DELIVERED): Expected({"delivered": 1}, finished=True),
    ("lane", Outcome.RETRY): Expected(waits_for=NOW + 5),
    ("lane", Outcome.PARK): Expected(
        {"parked": 1},
        {operational.WEBHOOK_PARKED},
        {"lane.parked"},
        backlog=1,
        finished=True,
        waits_for=NOW + 300,
    ),
    ("lane", Outcome.GIVE_UP): Expected(
        {"gave_up": 1},
        {operational.DELIVERY_GAVE_UP},
        {"delivery.gave_up"},
        failed=[WINDOW],
        finished=True,
    ),
    ("lane", Outcome.DISABLE): Expected(
        {"parked": 1},
        {operational.WEBHOOK_DISABLED},  # and no PARKED: DISABLED said it
        {"webhook.disabled", "lane.parked"},
        webhook_state="DISABLED",
        backlog=1,
        finished=True,
        waits_for=NOW,
    ),
    # The drain deletes delivered runs; the parked row keeps its slot until then.
    ("backlog", Outcome.DELIVERED): Expected({"delivered": 1}, backlog=1, waits_for=NOW - 60),
    ("backlog", Outcome.RETRY): Expected(backlog=1, waits_for=NOW + 5),
    ("backlog", Outcome.PARK): Expected(backlog=1, waits_for=NOW + 300),
    ("backlog", Outcome.GIVE_UP): Expected(
        {"gave_up": 1},
        {operational.DELIVERY_GAVE_UP},
        {"delivery.gave_up"},
        failed=[WINDOW],
        finished=True,
        waits_for=NOW - 60,  # the next entry is tried in the same run
    ),
    ("backlog", Outcome.DISABLE): Expected(
        {},
        {operational.WEBHOOK_DISABLED},
        {"webhook.disabled"},
        webhook_state="DISABLED",
        backlog=1,
        waits_for=NOW - 60,  # left as it was: due, once it is enabled again
    ),
}


@dataclass
class World:
    """One webhook on real Postgres, with the executor's collaborators observed."""

    pool: asyncpg.Pool
    target: WebhookTarget
    metrics: DelivererMetrics
    published: Published
    announcer: Announcer
    outcomes: Outcomes

    def counted(self) -> dict[str, float]:
        values = {
            "delivered": self.metrics.delivered._value.get(),
            "gave_up": self.metrics.gave_up._value.get(),
            "parked": self.metrics.parked._value.get(),
        }
        return {name: value for name, value in values.items() if value}

    async def stored(self) -> tuple[str, int, list[str]]:
        key = uuid.UUID(self.target.id)
        state = await self.pool.fetchval("SELECT state FROM webhooks WHERE id = $1", key)
        count = await self.pool.fetchval("SELECT count(*) FROM backlog WHERE webhook_id = $1", key)
        rows = await self.pool.fetch(
            "SELECT reason FROM failed_deliveries WHERE webhook_id = $1 ORDER BY id", key
        )
        return state, count, [row["reason"] for row in rows]

    async def next_attempt_at(self) -> float | None:
        due = await self.pool.fetchval(
            "SELECT next_attempt_at FROM parked_webhooks WHERE webhook_id = $1",
            uuid.UUID(self.target.id),
        )
        return None if due is None else float(due.timestamp())


@pytest.fixture
async def world(pool: asyncpg.Pool, tenant: TenantKey) -> World:
    webhook_id = await make_webhook(pool, tenant.id)
    target = await load_target(pool, BOX, webhook_id)
    assert target is not None
    metrics = DelivererMetrics(build_registry(("deliverer",)), "g")
    published = Published()

    async def load(_webhook_id: str) -> WebhookTarget | None:
        return target

    announcer = Announcer(published, load)
    outcomes = Outcomes(pool, announcer, lambda: NOW, log_sample=1.0, metrics=metrics)
    return World(pool, target, metrics, published, announcer, outcomes)


async def lane_holding(world: World, task: DeliveryTask) -> tuple[Holding, Callable[[], Any]]:
    """A lane with ``task`` in flight, and how to observe (finished, waits for)."""
    tracker = OffsetTracker()
    tracker.add(1)
    lane = Lane(world.target.id, TP, Where.MEMORY)
    lane.push(Pending(task, TP, 1, tracker))
    entry = lane.take(NOW)
    entry.attempts = 1
    retries: list[float] = []
    parking = Parking(
        world.pool,
        lambda: NOW,
        lambda done: done.tracker.done(done.offset),
        lambda _lane: None,
        world.announcer,
        world.metrics,
    )

    def retry(_lane: Lane, when: float) -> None:
        retries.append(when)

    async def observe() -> tuple[bool, float | None]:
        finished = tracker.committable() == 2
        if retries:
            assert list(lane.pending) == [entry] and lane.failures == 1
            return finished, retries[-1]
        return finished, await world.next_attempt_at()

    return LaneHolding(parking, lane, entry, retry), observe


async def backlog_holding(world: World, task: DeliveryTask) -> tuple[Holding, Callable[[], Any]]:
    """``task`` parked as the head of the webhook's backlog (due a minute ago, claimed)."""
    await backlog.park(world.pool, world.target.id, [task], NOW - 100, 6, NOW - 60)
    claimed = await backlog.claim_due(world.pool, time.time(), 30.0, 10)
    assert [parked.webhook_id for parked in claimed] == [world.target.id]
    (entry,) = await backlog.head(world.pool, world.target.id, 1)

    async def observe() -> tuple[bool, float | None]:
        left = not await backlog.head(world.pool, world.target.id, 1)
        return left, await world.next_attempt_at()

    return BacklogHolding(world.pool, entry), observe


@pytest.mark.parametrize(("holder", "outcome"), list(TABLE))
async def test_each_step_is_carried_out_alike_for_lanes_and_the_backlog(
    world: World, holder: str, outcome: Outcome
) -> None:
    """One row per (where the delivery waits, outcome): what the user sees afterwards."""
    task = make_task(world.target.id, world.target.tenant_id, 1)
    make = lane_holding if holder == "lane" else backlog_holding
    holding, observe = await make(world, task)
    status = 200 if outcome is Outcome.DELIVERED else (410 if outcome is Outcome.DISABLE else 500)
    result = make_result(
        world.target.id, world.target.tenant_id, status=status, event_id=task.event.id
    )
    with capture_logs() as logs:
        await world.outcomes.carry_out(STEPS[outcome], result, world.target, task, holding)
    await world.announcer.close(within=5)
    finished, waits_for = await observe()
    state, in_backlog, failed = await world.stored()
    seen = Seen(
        counted=world.counted(),
        announced={event.topic for event in world.published},
        logged={line["event"] for line in logs} & LOGGED,
        webhook_state=state,
        backlog=in_backlog,
        failed=failed,
        finished=finished,
        waits_for=None if waits_for is None else round(waits_for),
    )
    expected = TABLE[holder, outcome]
    if expected.waits_for is not None:
        expected.waits_for = round(expected.waits_for)
    assert seen == Seen(**vars(expected))
    # Every attempt has its line; a failure's names the step taken.
    (line,) = [line for line in logs if line["event"] in ATTEMPT_LINES]
    if status == 200:
        assert line["event"] == "delivery.succeeded"
    else:
        assert (line["event"], line["action"]) == ("delivery.failed", outcome.value)


# Postgres refuses to write webhook rows while the trigger exists.
REFUSE_WEBHOOK_UPDATES = """
CREATE FUNCTION refuse() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'refused'; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse BEFORE UPDATE ON webhooks FOR EACH ROW EXECUTE FUNCTION refuse();
"""


async def test_a_disable_postgres_refuses_still_keeps_the_deliveries(world: World) -> None:
    """The webhook row cannot be written: logged, nothing announced, the delivery kept."""
    task = make_task(world.target.id, world.target.tenant_id, 1)
    holding, _ = await lane_holding(world, task)
    result = make_result(world.target.id, world.target.tenant_id, status=410)
    await world.pool.execute(REFUSE_WEBHOOK_UPDATES)
    try:
        with capture_logs() as logs:
            step = STEPS[Outcome.DISABLE]
            await world.outcomes.carry_out(step, result, world.target, task, holding)
    finally:
        await world.pool.execute("DROP TRIGGER refuse ON webhooks; DROP FUNCTION refuse()")
    await world.announcer.close(within=5)
    assert "webhook.disable_failed" in {line["event"] for line in logs}
    assert world.published == []
    assert await world.stored() == ("ENABLED", 1, [])
