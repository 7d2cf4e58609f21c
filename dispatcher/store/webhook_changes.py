"""Following changes to webhooks: the ``hooklane_webhooks`` Postgres channel.

A trigger on ``webhooks`` notifies the id of every inserted, updated or deleted row.
``WebhookChanges`` hears it on the process's one listen connection
(``dispatcher.store.notifications``) and hands each id to its owner, with a full resync
on every (re)connect and periodically, so a missed notification leaves nothing stale
for long. The router's subscription index and the deliverer's target cache follow it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from dispatcher.store.db import TRANSIENT_ERRORS
from dispatcher.store.notifications import Notifications, Subscription
from dispatcher.tasks import cancel, until_ready

log = structlog.get_logger(__name__)

CHANNEL = "hooklane_webhooks"
RESYNC_INTERVAL_S = 30.0
RECONNECT_DELAY_S = 1.0

ChangeCallback = Callable[[str], Awaitable[None]]
_RESYNC = object()
ResyncCallback = Callable[[], Awaitable[None]]


class WebhookChanges:
    """Follows ``hooklane_webhooks`` through the process's ``Notifications``.

    ``on_change(webhook_id)`` runs for each notification, one at a time and in arrival
    order (so a slow reload never overtakes a newer one). ``on_resync()`` runs once
    listening (the first time and after every reconnect of the listen connection, so
    nothing changed while it was down goes unseen) and every ``resync_interval`` seconds.
    """

    def __init__(
        self,
        notifications: Notifications,
        on_change: ChangeCallback,
        on_resync: ResyncCallback,
        resync_interval: float = RESYNC_INTERVAL_S,
    ) -> None:
        self._notifications = notifications
        self._on_change = on_change
        self._on_resync = on_resync
        self._resync_interval = resync_interval
        # A webhook id, or _RESYNC after a (re)connect.
        self._queue: asyncio.Queue[str | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start following; returns after the first successful resync."""
        self._subscription = await self._notifications.subscribe(
            [CHANNEL],
            lambda _channel, payload: self._queue.put_nowait(payload),
            lambda: self._queue.put_nowait(_RESYNC),
        )
        self._task = asyncio.create_task(self._run(), name="webhook-changes")
        await until_ready(self._task, self._ready)

    async def stop(self) -> None:
        """Stop following changes."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await self._notifications.unsubscribe(subscription)
        task, self._task = self._task, None
        await cancel(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        loaded = False  # changes before the first load are in it
        next_resync: float | None = None  # None: wait for the first (re)connect
        while True:
            timeout = None if next_resync is None else max(0.0, next_resync - loop.time())
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns an item that is
            # ready at the moment of a cancel and drops the cancel, so stop() waited for
            # ever while this loop went on resyncing.
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                item = _RESYNC
            try:
                if item is _RESYNC:
                    await self._on_resync()
                    loaded = True
                    self._ready.set()
                    next_resync = loop.time() + self._resync_interval
                elif loaded:
                    await self._on_change(str(item))
            except TRANSIENT_ERRORS as exc:
                # Postgres went away mid-load: whatever was missed, a resync soon repairs.
                log.warning("webhook_changes.reload_failed", error=str(exc))
                next_resync = loop.time() + RECONNECT_DELAY_S
