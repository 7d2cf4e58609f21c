"""The backlog scheduler survives an exception inside Hooklane during an attempt.

Real Postgres and a loopback receiver; the sender raises for one delivery, as a bug in
Hooklane (or a task it cannot send) would. The delivery is given up on record (kept in
``failed_deliveries`` for replay), logged once with its webhook id and counted; the
rest of the backlog drains in order and the scheduler goes on serving other webhooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from dispatcher.delivery.http.sender import AiohttpSender, Response
from dispatcher.ops.metrics import DelivererMetrics, build_registry
from dispatcher.settings import Settings
from dispatcher.store import backlog
from tests.support.failure import clean_backlog, make_webhook, ok_numbers
from tests.support.pipeline import wait_until
from tests.support.receiver import Receiver
from tests.test_scheduler import park_tasks, running_scheduler

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)


class RaisingSender:
    """The real sender, except that it raises for the delivery whose data ``n`` is ``poison``."""

    def __init__(self, settings: Settings, poison: int) -> None:
        self._inner = AiohttpSender(settings)
        self._poison = poison

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        if orjson.loads(body)["data"]["n"] == self._poison:
            raise RuntimeError("boom")
        return await self._inner.send(url, body, headers)

    async def close(self) -> None:
        await self._inner.close()


async def _drained(pool: Any, webhook_id: str) -> bool:
    return not await backlog.parked_among(pool, [webhook_id])


async def test_an_exception_in_an_attempt_gives_that_delivery_up_and_the_drain_goes_on(
    settings: Settings, pool: Any, tenant: Any
) -> None:
    """The head before and the deliveries after the failing one arrive, in order; the
    failing one is recorded for replay, logged once and counted; the loop keeps serving."""
    metrics = DelivererMetrics(build_registry(("deliverer",)), "g")
    sender = RaisingSender(settings, poison=1)
    try:
        async with Receiver() as rx:
            webhook_id = await make_webhook(pool, tenant.id, rx.url)
            event_ids = await park_tasks(pool, webhook_id, tenant.id, 3)
            with capture_logs() as logs:
                async with running_scheduler(settings, pool, sender, metrics=metrics):
                    await rx.wait_for(lambda r: len(ok_numbers(r)) == 2)
                    await wait_until(lambda: _drained(pool, webhook_id))
                    # Still running: a webhook parked afterwards is drained as well.
                    later = await make_webhook(pool, tenant.id, rx.url)
                    await park_tasks(pool, later, tenant.id, 1)
                    await rx.wait_for(lambda r: len(ok_numbers(r)) == 3)
                    await wait_until(lambda: _drained(pool, later))
    finally:
        await sender.close()
    assert ok_numbers(rx) == [0, 2, 0]
    failed = await pool.fetch(
        "SELECT event_id, reason FROM failed_deliveries WHERE webhook_id = $1", webhook_id
    )
    assert [row["event_id"] for row in failed] == [event_ids[1]]
    assert failed[0]["reason"] == "internal error: RuntimeError: boom"
    errors = [line for line in logs if line["event"] == "delivery.internal_error"]
    assert [(line["webhook_id"], line["event_id"]) for line in errors] == [
        (webhook_id, event_ids[1])
    ]
    assert metrics.gave_up._value.get() == 1
    assert metrics.delivered._value.get() == 3
    assert not [line for line in logs if line["event"] == "scheduler.work_failed"]
