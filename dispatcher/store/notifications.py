"""One LISTEN connection per process, serving every Postgres channel it follows.

A process that follows several channels (the deliverer: ``hooklane_webhooks`` for
its target cache and lanes, ``hooklane_parked`` and ``hooklane_webhooks`` for its
backlog scheduler) holds one dedicated connection for all of them, not one per
subscriber. ``Notifications`` owns it: ``subscribe(channels, on_notify, on_connect)``
registers a subscriber, each payload of its channels goes to ``on_notify(channel,
payload)``, and ``on_connect()`` runs once the subscriber is listening: at once when
it subscribes to a live connection, and again after every reconnect, so it can
resync whatever changed while nothing was listening (NOTIFY is not queued for
absent listeners). A lost connection is reopened with exponential backoff.

Callbacks are plain functions, called on the event loop as notifications arrive:
they must not block (queue the work, set an event).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from dispatcher.store.db import TRANSIENT_ERRORS
from dispatcher.tasks import cancel, until_ready

log = structlog.get_logger(__name__)

APPLICATION_NAME = "hooklane-listen"
CONNECT_TIMEOUT_S = 10.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0

NotifyCallback = Callable[[str, str], None]
ConnectCallback = Callable[[], None]


@dataclass(frozen=True, eq=False, slots=True)
class Subscription:
    """One subscriber's channels and callbacks (the handle ``unsubscribe`` takes)."""

    channels: tuple[str, ...]
    on_notify: NotifyCallback
    on_connect: ConnectCallback | None


def backoff_delays(first: float = FIRST_BACKOFF_S, cap: float = MAX_BACKOFF_S) -> Iterable[float]:
    """The waits before successive reconnect attempts: doubling from ``first`` up to ``cap``."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


class Notifications:
    """The process's LISTEN connection and its subscribers (see the module docstring)."""

    def __init__(self, database_url: str, application_name: str = APPLICATION_NAME) -> None:
        self._database_url = database_url
        self._application_name = application_name
        self._subscriptions: list[Subscription] = []
        self._conn: asyncpg.Connection | None = None
        self._listening: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.connects = 0  # connections opened so far (1 + reconnects)

    async def start(self) -> None:
        """Open the connection; returns once it is listening (waits out a Postgres outage)."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="pg-notifications")
        await until_ready(self._task, self._connected)

    async def stop(self) -> None:
        """Close the connection; subscribers get nothing more."""
        task, self._task = self._task, None
        await cancel(task)

    async def subscribe(
        self,
        channels: Iterable[str],
        on_notify: NotifyCallback,
        on_connect: ConnectCallback | None = None,
    ) -> Subscription:
        """Follow ``channels``; ``on_connect`` runs now if connected, and after every reconnect."""
        subscription = Subscription(tuple(dict.fromkeys(channels)), on_notify, on_connect)
        self._subscriptions.append(subscription)
        conn = self._conn
        if conn is not None and not conn.is_closed():
            try:
                await self._listen(conn, subscription.channels)
            except TRANSIENT_ERRORS as exc:
                # The reconnect LISTENs on every channel and calls on_connect.
                log.warning("notifications.listen_failed", error=str(exc))
                return subscription
            if on_connect is not None:
                on_connect()
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription``; channels nobody follows any more are UNLISTENed."""
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        still = self._channels()
        conn = self._conn
        for channel in [c for c in subscription.channels if c not in still]:
            if channel in self._listening and conn is not None and not conn.is_closed():
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await conn.remove_listener(channel, self._notified)
            self._listening.discard(channel)

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        text = str(payload)
        for subscription in list(self._subscriptions):
            if channel in subscription.channels:
                try:
                    subscription.on_notify(channel, text)
                except Exception:  # one subscriber's bug must not starve the others
                    log.exception("notifications.callback_failed", channel=channel)

    def _channels(self) -> set[str]:
        return {channel for sub in self._subscriptions for channel in sub.channels}

    async def _listen(self, conn: asyncpg.Connection, channels: Iterable[str]) -> None:
        for channel in channels:
            if channel not in self._listening:
                await conn.add_listener(channel, self._notified)
                self._listening.add(channel)

    async def _run(self) -> None:
        delays = iter(backoff_delays())
        while True:
            before = self.connects
            try:
                await self._serve_once()
            except TRANSIENT_ERRORS as exc:
                log.warning("notifications.connection_lost", error=str(exc))
            if self.connects > before:
                delays = iter(backoff_delays())  # it was up: this outage starts over
            await asyncio.sleep(next(delays))

    async def _serve_once(self) -> None:
        conn = await asyncpg.connect(
            self._database_url,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": self._application_name},
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            self._listening = set()
            # Until nothing is missing: a subscriber may arrive while LISTENs are awaited
            # (it saw no live connection, so it relies on this loop and on_connect).
            while missing := self._channels() - self._listening:
                await self._listen(conn, sorted(missing))
            channels = sorted(self._listening)
            self._conn = conn
            self.connects += 1
            self._connected.set()
            log.info("notifications.listening", channels=channels, connects=self.connects)
            # Listening first, resyncing second: a change during a resync is not missed.
            for subscription in list(self._subscriptions):
                if subscription.on_connect is not None:
                    subscription.on_connect()
            await lost.wait()
            raise ConnectionError("the listen connection was closed")
        finally:
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
