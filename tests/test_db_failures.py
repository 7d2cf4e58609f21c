"""What Postgres going away raises, and the long-running paths that must survive it.

The errors are the ones asyncpg raised in a probe that terminated the backends of a
database and refused new connections while a pool was busy (and in `make chaos`'s
flapping scenario). ``InternalClientError`` is asyncpg's "cannot switch to state ..."
on a pooled connection whose backend was terminated while idle (MagicStack/asyncpg
#1069): it once escaped the router's admission step and ended the process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from dispatcher.messages.wire import Event
from dispatcher.router.ingest import Ingest
from dispatcher.settings import Settings
from dispatcher.store import db, webhook_changes
from dispatcher.store.webhook_changes import WebhookChanges

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"

GONE = [
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.ObjectNotInPrerequisiteStateError(
        'database "hooklane" is not currently accepting connections'
    ),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    ConnectionRefusedError(111, "Connection refused"),
]
IDS = [type(error).__name__ for error in GONE]


class GonePool:
    """A pool whose every statement and checkout raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def fetch(self, *_args: Any) -> Any:
        raise self.error

    fetchval = fetchrow = execute = fetch

    def acquire(self) -> GonePool:
        return self

    async def __aenter__(self) -> Any:
        raise self.error

    async def __aexit__(self, *_exc: Any) -> None:
        return None

    async def close(self) -> None:
        return None


class Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.topic, self.partition, self.offset, self.value = f"p.{TOPIC}", 0, offset, value
        self.headers: tuple[tuple[str, bytes], ...] = ()


@pytest.mark.parametrize("error", GONE, ids=IDS)
def test_every_error_of_a_vanished_postgres_is_transient(error: BaseException) -> None:
    assert isinstance(error, db.TRANSIENT_ERRORS)


@pytest.mark.parametrize("error", GONE, ids=IDS)
async def test_admission_routes_every_event_while_postgres_is_gone(
    error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router's admission step logs and routes (at-least-once) instead of raising."""

    async def create_pool(*_args: Any, **_kwargs: Any) -> GonePool:
        return GonePool(error)

    monkeypatch.setattr(db, "create_pool", create_pool)

    async def known(_topic: str) -> bool:
        return True

    ingest = Ingest(Settings(topic_prefix="p.", validate_events=True), known)
    await ingest.start()
    events = [Event(f"evt_{n}", TOPIC, "ten_a", 1, {"registration_id": f"r{n}"}) for n in range(3)]
    try:
        with capture_logs() as logs:
            verdicts = await ingest.admit(
                [Record(item.to_message(), n) for n, item in enumerate(events)]
            )
            await asyncio.sleep(0)  # the purge task's first round meets the error too
    finally:
        await ingest.stop()  # re-raises nothing: the purge task logged and slept
    assert verdicts == events
    seen = {entry["event"] for entry in logs}
    assert {"ingest.schemas_unavailable", "ingest.store_unavailable"} <= seen


class OneShotNotifications:
    """Calls ``on_connect`` at once, as the listen connection does when it is up."""

    async def subscribe(self, _channels: Any, _on_notify: Any, on_connect: Any = None) -> object:
        if on_connect is not None:
            on_connect()
        return object()

    async def unsubscribe(self, _subscription: object) -> None:
        return None


@pytest.mark.parametrize("error", GONE, ids=IDS)
async def test_webhook_changes_resync_again_after_a_failed_one(
    error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resync that meets a vanished Postgres is retried; the follower does not die."""
    monkeypatch.setattr(webhook_changes, "RECONNECT_DELAY_S", 0.01)
    attempts = 0

    async def on_resync() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise error

    async def on_change(_webhook_id: str) -> None:
        return None

    changes = WebhookChanges(OneShotNotifications(), on_change, on_resync)  # type: ignore[arg-type]
    with capture_logs() as logs:
        await asyncio.wait_for(changes.start(), 5)
    await changes.stop()
    assert attempts == 3
    assert [e["event"] for e in logs].count("webhook_changes.reload_failed") == 2
