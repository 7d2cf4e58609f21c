"""What the backlog scheduler announces: RECOVERED after a drain, DISABLED, bounded GAVE_UP.

Real Postgres and loopback receivers (``test_scheduler``'s helpers); the announcer's
publish records the events (the broker path is in ``test_operational_pipeline.py``).
"""

from __future__ import annotations

import functools
import time
from datetime import datetime

import pytest

from dispatcher.deliverer.announcer import Announcer
from dispatcher.messages import operational
from dispatcher.store.webhook_targets import load_target
from tests import test_scheduler as scheduler_tests
from tests.support.failure import BOX, clean_backlog, make_webhook, ok_numbers
from tests.support.pipeline import wait_until
from tests.support.receiver import Receiver, failing, numbered
from tests.test_announcer import Published
from tests.test_scheduler import (
    BlockedSender,
    _not_parked,
    _state_is,
    park_tasks,
    running_scheduler,
)

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)

# test_scheduler's fixture: park after 1 s, long retries every second.
short = scheduler_tests.short


def _announcer(pool, **options) -> tuple[Announcer, Published]:
    published = Published()
    return Announcer(published, functools.partial(load_target, pool, BOX), **options), published


async def test_a_drained_backlog_announces_one_recovered(short, pool, tenant) -> None:
    """Failing, then 2xx: the drain ends in one RECOVERED with the drained count and episode."""
    announcer, published = _announcer(pool)
    async with Receiver(numbered(lambda n: (500, {}) if n < 2 else (200, {}))) as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        since = time.time()
        await park_tasks(pool, webhook_id, tenant.id, 4)
        async with running_scheduler(short, pool, announcer=announcer):
            await rx.wait_for(lambda r: len(ok_numbers(r)) == 4)
            await wait_until(lambda: _not_parked(pool, webhook_id))
        await announcer.close(within=5)
    assert published.topics() == {operational.WEBHOOK_RECOVERED: 1}
    (recovered,) = published
    assert recovered.tenant_id == tenant.id
    assert recovered.data["webhook_id"] == webhook_id and recovered.data["backlog"] == 4
    failing_since = datetime.fromisoformat(recovered.data["failing_since"])
    assert since <= failing_since.timestamp() <= since + 5  # the episode park_tasks began


async def test_gone_in_the_backlog_announces_disabled(short, pool, tenant) -> None:
    """A 410 answered to the scheduler disables the webhook and announces it, once."""
    announcer, published = _announcer(pool)
    async with Receiver(failing(410)) as rx:
        webhook_id = await make_webhook(pool, tenant.id, rx.url)
        await park_tasks(pool, webhook_id, tenant.id, 3)
        async with running_scheduler(short, pool, announcer=announcer):
            await wait_until(lambda: _state_is(pool, webhook_id, "DISABLED"))
        await announcer.close(within=5)
    assert published.topics() == {operational.WEBHOOK_DISABLED: 1}
    assert "410" in published[0].data["reason"]
    assert published[0].data["webhook_id"] == webhook_id


async def test_given_up_backlog_announces_gave_up_within_the_bound(short, pool, tenant) -> None:
    """Every parked delivery given up, but at most the per-minute bound of GAVE_UP."""
    announcer, published = _announcer(pool, gave_up_per_minute=2)
    webhook_id = await make_webhook(pool, tenant.id)
    event_ids = await park_tasks(pool, webhook_id, tenant.id, 5)
    async with running_scheduler(short, pool, BlockedSender(), announcer=announcer):
        await wait_until(lambda: _not_parked(pool, webhook_id))
    await announcer.close(within=5)
    # Emptied by giving up, not by a 2xx: the endpoint did not recover.
    assert published.topics() == {operational.DELIVERY_GAVE_UP: 2}
    # The first two given up; each publish runs in its own task, so in either order.
    assert sorted(event.data["event_id"] for event in published) == sorted(event_ids[:2])
    assert all(event.data["attempts"] == 1 for event in published)
