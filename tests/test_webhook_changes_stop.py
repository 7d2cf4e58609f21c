"""``WebhookChanges.stop()`` returns even when a change arrives at the moment it cancels.

Python 3.11's ``asyncio.wait_for`` drops a cancellation when the awaited item is ready
at the same moment (it returns the item instead), so the follower went on resyncing
every 30 s and ``stop()`` waited for it for ever: the router's subscription index hung
its shutdown (seen twice in CI as a 120 s test timeout).
"""

from __future__ import annotations

import asyncio

from dispatcher.settings import Settings
from dispatcher.store.notifications import Notifications
from dispatcher.store.webhook_changes import _RESYNC, WebhookChanges


async def test_stop_is_not_lost_to_a_change_arriving_at_the_same_moment(
    settings: Settings,
) -> None:
    notifications = Notifications(settings.database_url)
    await notifications.start()
    resyncs: list[int] = []

    async def on_change(webhook_id: str) -> None:
        pass

    async def on_resync() -> None:
        resyncs.append(1)

    try:
        for turns in range(4):  # how many loop turns the change gets before the cancel
            changes = WebhookChanges(notifications, on_change, on_resync, resync_interval=0.05)
            await changes.start()
            await asyncio.sleep(0.01)
            changes._queue.put_nowait(_RESYNC)
            for _ in range(turns):
                await asyncio.sleep(0)
            task = changes._task
            assert task is not None
            task.cancel()  # what stop() does after unsubscribing
            done, _ = await asyncio.wait({task}, timeout=2)
            await changes.stop()
            assert done, f"the cancel was lost ({turns} turns): the follower runs on"
    finally:
        await notifications.stop()
