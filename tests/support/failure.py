"""Helpers shared by the failure-handling tests (no tests here).

Small builders for webhooks, tasks and attempt results; the order a receiver saw.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.delivery.secrets import SecretBox
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.store.webhook_store import create_webhook
from tests.conftest import TEST_SECRET_KEY
from tests.support.receiver import Receiver

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


def ok_numbers(rx: Receiver) -> list[int]:
    """``data.n`` (see ``make_task``) of the requests ``rx`` answered 2xx, in arrival order."""
    return [r.json()["data"]["n"] for r in rx.requests if r.ok]
