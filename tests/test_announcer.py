"""The announcer: what it publishes for each trouble, the GAVE_UP bound, best effort."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest
from structlog.testing import capture_logs

from dispatcher.deliverer.announcer import Announcer
from dispatcher.delivery.attempt import AttemptResult, WebhookTarget
from dispatcher.messages import operational
from dispatcher.messages.wire import DeliveryTask, Event

WEBHOOK = "3f0c7e52-8d7b-4c1e-9a57-2b1e4a6b9c10"
TENANT = "tenant-a"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Published(list[Event]):
    """An announcer's ``publish`` that keeps what it was given."""

    async def __call__(self, event: Event) -> None:
        self.append(event)

    def topics(self) -> Counter[str]:
        """How many events of each topic were published."""
        return Counter(event.topic for event in self)


async def _target(webhook_id: str) -> WebhookTarget | None:
    if webhook_id != WEBHOOK:
        return None  # deleted
    return WebhookTarget(id=webhook_id, tenant_id=TENANT, url="http://127.0.0.1:9/", secrets=())


def _task(event_id: str, topic: str = "REGISTRATIONS.NEW.SUCCEEDED") -> DeliveryTask:
    return DeliveryTask(WEBHOOK, Event(event_id, topic, TENANT, 1, {}))


def _result(error: str | None, status: int | None) -> AttemptResult:
    return AttemptResult(WEBHOOK, TENANT, "e", "T", 1, 0.0, 1.0, status_code=status, error=error)


async def _settled(announcer: Announcer) -> None:
    await announcer.close(within=5)


async def test_each_trouble_publishes_its_event_on_the_webhooks_tenant():
    """disabled/parked/recovered/gave_up publish the builders' events for the webhook's tenant."""
    published, clock = Published(), Clock()
    announcer = Announcer(published, _target, clock=clock)
    announcer.attempted(_result("HTTP 503", 503))
    announcer.disabled(WEBHOOK, "the endpoint answered 410 Gone", clock.now - 5)
    announcer.parked(WEBHOOK, 12, clock.now - 60)
    announcer.recovered(WEBHOOK, 12, clock.now - 60)
    announcer.gave_up(WEBHOOK, _task("e1"), 7, "timeout")
    await _settled(announcer)

    by_topic = {event.topic: event for event in published}
    assert set(by_topic) == operational.TOPICS
    assert all(event.tenant_id == TENANT for event in published)
    assert all(event.data["webhook_id"] == WEBHOOK for event in published)
    assert by_topic[operational.WEBHOOK_PARKED].data["backlog"] == 12
    assert by_topic[operational.WEBHOOK_PARKED].data["last_error"] == "HTTP 503"
    assert by_topic[operational.DELIVERY_GAVE_UP].data["event_id"] == "e1"
    assert by_topic[operational.DELIVERY_GAVE_UP].data["attempts"] == 7


async def test_announcing_the_same_episode_twice_gives_the_same_event_id():
    """A re-announcement (say after a crash) carries the same id, so ingest drops it."""
    published, clock = Published(), Clock()
    announcer = Announcer(published, _target, clock=clock)
    since = clock.now - 60
    announcer.parked(WEBHOOK, 3, since)
    clock.now += 30
    announcer.parked(WEBHOOK, 5, since)
    await _settled(announcer)
    assert len({event.id for event in published}) == 1


@pytest.mark.parametrize(
    ("per_minute", "given_up", "minutes_later", "announced"),
    [
        (10, 3, 0.0, 3),  # under the bound: every one
        (10, 500, 0.0, 10),  # a burst: only the bound
        (10, 10, 1.0, 20),  # a minute later the bound is available again
        (2, 5, 0.5, 3),  # refills gradually: one more after half a minute
    ],
)
async def test_gave_up_announcements_are_bounded_per_webhook_per_minute(
    per_minute, given_up, minutes_later, announced
):
    """At most ``per_minute`` GAVE_UP per webhook per minute; the rest are not published."""
    published, clock = Published(), Clock()
    announcer = Announcer(published, _target, clock=clock, gave_up_per_minute=per_minute)
    for n in range(given_up):
        announcer.gave_up(WEBHOOK, _task(f"a{n}"), 3, "HTTP 500")
    if minutes_later:
        clock.now += minutes_later * 60
        for n in range(given_up):
            announcer.gave_up(WEBHOOK, _task(f"b{n}"), 3, "HTTP 500")
    await _settled(announcer)
    assert len(published) == announced


async def test_the_bound_is_per_webhook():
    """One webhook's burst does not use up another webhook's GAVE_UP allowance."""
    published, clock = Published(), Clock()
    other = "9a0c7e52-8d7b-4c1e-9a57-2b1e4a6b9c10"

    async def either(webhook_id: str) -> WebhookTarget | None:
        return WebhookTarget(id=webhook_id, tenant_id=TENANT, url="http://x/", secrets=())

    announcer = Announcer(published, either, clock=clock, gave_up_per_minute=1)
    for n in range(5):
        announcer.gave_up(WEBHOOK, _task(f"a{n}"), 1, None)
    announcer.gave_up(other, dataclasses.replace(_task("o"), webhook_id=other), 1, None)
    await _settled(announcer)
    assert sorted(event.data["webhook_id"] for event in published) == sorted([WEBHOOK, other])


async def test_giving_up_an_operational_event_is_not_announced():
    """A given-up announcement is not announced in turn (no loop between two webhooks)."""
    published = Published()
    announcer = Announcer(published, _target)
    announcer.gave_up(WEBHOOK, _task("x", operational.WEBHOOK_PARKED), 9, "HTTP 500")
    await _settled(announcer)
    assert published == []


async def test_a_failed_publish_is_logged_and_raises_nowhere():
    """Best effort: a broker error is logged; the caller never sees it."""

    async def broken(event: Event) -> None:
        raise ConnectionError("broker down")

    announcer = Announcer(broken, _target)
    with capture_logs() as logs:
        announcer.disabled(WEBHOOK, "gone", None)
        await _settled(announcer)
    failures = [entry for entry in logs if entry["event"] == "announcer.publish_failed"]
    assert len(failures) == 1 and "broker down" in failures[0]["error"]


async def test_a_deleted_webhook_is_not_announced():
    """No target any more: nothing to tell and no tenant to tell it to."""
    published = Published()
    announcer = Announcer(published, _target)
    announcer.disabled("11111111-1111-1111-1111-111111111111", "gone", None)
    await _settled(announcer)
    assert published == []


async def test_methods_return_before_the_publish_finishes():
    """The delivery path never waits for the broker: the publish runs in the background."""
    release = asyncio.Event()
    published = Published()

    async def slow(event: Event) -> None:
        await release.wait()
        await published(event)

    announcer = Announcer(slow, _target)
    announcer.disabled(WEBHOOK, "gone", None)  # returns although the publish is blocked
    assert published == []
    release.set()
    await _settled(announcer)
    assert len(published) == 1
