"""Helpers shared by the failure-handling tests (no tests here).

A loopback receiver whose answers a test scripts, and small builders for webhooks,
tasks and attempt results.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.delivery.secrets import SecretBox
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.store.webhooks import create_webhook
from tests.conftest import TEST_SECRET_KEY

BOX = SecretBox.from_setting(TEST_SECRET_KEY)


@pytest.fixture
async def clean_backlog(pool: Any) -> AsyncIterator[None]:
    """Nothing parked before or after the test (the session database is shared)."""
    await pool.execute("DELETE FROM parked_webhooks; DELETE FROM backlog")
    yield
    await pool.execute("DELETE FROM parked_webhooks; DELETE FROM backlog")


async def make_webhook(
    pool: Any, tenant_id: str, url: str = "http://127.0.0.1:9/", **kw: Any
) -> str:
    """Create an ENABLED webhook of ``tenant_id``; returns its id."""
    webhook = await create_webhook(
        pool,
        BOX,
        tenant_id=tenant_id,
        url=url,
        topics=kw.pop("topics", ["NEXUS.THRESHOLD.STATE.ALERT"]),
        secret=kw.pop("secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        **kw,
    )
    return webhook.id


def make_task(webhook_id: str, tenant_id: str, n: int, kind: str = "event") -> DeliveryTask:
    """Delivery task number ``n`` (its data carries ``n`` so receivers can check order)."""
    event = Event(
        id=f"evt-{uuid.uuid4().hex[:12]}-{n}",
        topic="NEXUS.THRESHOLD.STATE.ALERT",
        tenant_id=tenant_id,
        triggered_at=int(time.time()),
        data={"n": n},
    )
    return DeliveryTask(webhook_id, event, kind)  # type: ignore[arg-type]


def make_result(
    webhook_id: str,
    tenant_id: str = "t",
    *,
    status: int | None = 200,
    at: float | None = None,
    event_id: str = "evt",
    attempt: int = 1,
    test: bool = False,
    body: str | None = None,
) -> AttemptResult:
    """An attempt result as ``attempt_delivery`` would return it."""
    return AttemptResult(
        webhook_id=webhook_id,
        tenant_id=tenant_id,
        event_id=event_id,
        topic="NEXUS.THRESHOLD.STATE.ALERT",
        attempt=attempt,
        attempted_at=time.time() if at is None else at,
        duration_ms=3.5,
        status_code=status,
        error=None if status is not None and 200 <= status < 300 else f"HTTP {status}",
        error_class=None if status is not None and 200 <= status < 300 else "HTTPStatus",
        response_body=body,
        test=test,
    )


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    for _ in range(100_000):
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {within} s")


@dataclass
class Received:
    """One request the receiver got."""

    at: float
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    """A loopback endpoint; ``respond(request_number) -> (status, headers)`` scripts it."""

    respond: Callable[[int], tuple[int, dict[str, str]]] = lambda _n: (200, {})
    received: list[Received] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ok_numbers(self) -> list[int]:
        """``data.n`` of the requests answered 2xx, in arrival order."""
        return [r.body["data"]["n"] for r in self.received if r.headers.get("x-status") == "2xx"]

    async def wait_for(self, predicate: Callable[[Receiver], bool], within: float = 30) -> None:
        """Wait until ``predicate(self)`` holds (checked on every request)."""
        async with asyncio.timeout(within):
            while not predicate(self):
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def receiver(respond: Callable[[int], tuple[int, dict[str, str]]]) -> AsyncIterator[Receiver]:
    """Run a scripted receiver on a free loopback port."""
    state = Receiver(respond)

    async def handle(request: web.Request) -> web.Response:
        number = len(state.received)
        status, headers = state.respond(number)
        record = dict(request.headers)
        record["x-status"] = "2xx" if 200 <= status < 300 else str(status)
        state.received.append(Received(time.time(), orjson.loads(await request.read()), record))
        state.arrived.set()
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/"
    try:
        yield state
    finally:
        await runner.cleanup()
