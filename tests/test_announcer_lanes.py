"""What the lanes announce: one PARKED per episode, DISABLED on 410, GAVE_UP on give-up.

The Worker with the scripted sender and targets of ``test_deliverer_worker`` and an
``Announcer`` whose publish records the events (the broker path is in
``test_operational_pipeline.py``).
"""

from __future__ import annotations

import asyncio

from dispatcher.deliverer.announcer import Announcer
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.failures import BlockedDestination
from dispatcher.messages import operational
from dispatcher.settings import Settings
from tests.support.pipeline import wait_until
from tests.test_announcer import Published
from tests.test_deliverer_worker import FakeSender, _equals, _has, _target, harness, wid


async def _down(_url: str, _event: str) -> int:
    return 500


def _failing(settings: Settings) -> Settings:
    """Park a failing lane after 0.2 s."""
    return settings.replace(retry_schedule=(0.05, 0.05, 0.05, 1.0), park_after=0.2)


def _announcer(targets: dict[str, WebhookTarget | None]) -> tuple[Announcer, Published]:
    published = Published()

    async def load(webhook_id: str) -> WebhookTarget | None:
        # Looked up when the announcement is built, once the harness named the ids.
        by_id = {wid(name): target for name, target in targets.items()}
        return by_id.get(webhook_id)

    return Announcer(published, load), published


async def test_a_parked_lane_is_announced_once_however_much_follows(settings: Settings) -> None:
    """Parking a failing lane publishes one PARKED; deliveries appended later add none."""
    settings = _failing(settings)
    targets: dict[str, WebhookTarget | None] = {"w": _target("w")}
    announcer, published = _announcer(targets)
    async with harness(settings, targets, FakeSender(answer=_down), announcer=announcer) as h:
        for n in range(5):
            h.submit("w", f"e{n}")
        await wait_until(lambda: h.parked("w"), within=10)
        for n in range(5, 50):
            h.submit("w", f"e{n}")
        await wait_until(lambda: _has(h.backlog("w"), 50), within=5)
        await announcer.close(within=5)
    assert published.topics() == {operational.WEBHOOK_PARKED: 1}
    (parked,) = published
    assert parked.data["webhook_id"] == wid("w") and parked.tenant_id == "tenant"
    assert parked.data["backlog"] == 5


async def test_a_lane_joining_a_parked_backlog_announces_nothing(settings: Settings) -> None:
    """Parked already (say by the previous owner): not a new episode, no PARKED."""
    settings = _failing(settings)
    targets: dict[str, WebhookTarget | None] = {"w": _target("w")}
    announcer, published = _announcer(targets)
    async with harness(settings, targets, FakeSender(answer=_down), announcer=announcer) as h:
        h.submit("w", "e0")
        await wait_until(lambda: bool(h.sender.sent), within=5)  # checked: not parked
        # Parked meanwhile by someone else, before this lane's own park is written.
        await h.park("w", [])
        await wait_until(lambda: _equals(h.backlog("w"), ["e0"]), within=10)
        await announcer.close(within=5)
    assert published == []


async def test_gone_announces_disabled_and_blocked_announces_gave_up(settings: Settings) -> None:
    """410: one DISABLED (no PARKED for its backlog); a blocked destination: one GAVE_UP."""

    async def answer(url: str, _event: str) -> int:
        if url.endswith("/gone"):
            return 410
        raise BlockedDestination("10.0.0.1 is private")

    targets: dict[str, WebhookTarget | None] = {
        "gone": _target("gone"),
        "blocked": _target("blocked"),
    }
    announcer, published = _announcer(targets)
    async with harness(settings, targets, FakeSender(answer=answer), announcer=announcer) as h:
        h.submit("gone", "g0")
        h.submit("gone", "g1")
        h.submit("blocked", "b0")
        await wait_until(lambda: h.position() == 4, within=5)
        await announcer.close(within=5)
    by_topic = {event.topic: event for event in published}
    assert published.topics() == {operational.WEBHOOK_DISABLED: 1, operational.DELIVERY_GAVE_UP: 1}
    assert by_topic[operational.WEBHOOK_DISABLED].data["webhook_id"] == wid("gone")
    assert "410" in by_topic[operational.WEBHOOK_DISABLED].data["reason"]
    gave_up = by_topic[operational.DELIVERY_GAVE_UP].data
    assert (gave_up["webhook_id"], gave_up["event_id"], gave_up["attempts"]) == (
        wid("blocked"),
        "b0",
        1,
    )


async def test_a_disabled_webhooks_parked_deliveries_are_not_announced(settings: Settings) -> None:
    """Deliveries kept for a webhook someone DISABLED are no failure: nothing is announced."""
    targets: dict[str, WebhookTarget | None] = {"w": _target("w", state="DISABLED")}
    announcer, published = _announcer(targets)
    async with harness(settings, targets, announcer=announcer) as h:
        for n in range(3):
            h.submit("w", f"e{n}")
        await wait_until(lambda: _has(h.backlog("w"), 3), within=5)
        await asyncio.sleep(0)
        await announcer.close(within=5)
    assert published == []
