"""What the worker writes to Postgres when a lane leaves memory: one narrow seam.

``DeliveryStore`` is the protocol the worker calls (parking, appending to a parked
backlog, recording a given-up delivery, disabling a webhook, reporting an adaptive
window); ``PostgresStore`` implements it with ``dispatcher.store``. Unit tests pass an
in-memory fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import asyncpg

from dispatcher.messages.wire import DeliveryTask
from dispatcher.store import backlog, failed_deliveries
from dispatcher.store import webhook_store as webhooks


class DeliveryStore(Protocol):
    """The Postgres side of parking (see ``dispatcher.store.backlog`` for the semantics)."""

    async def park(
        self,
        webhook_id: str,
        tasks: Sequence[DeliveryTask],
        failing_since: float,
        failures: int,
        next_attempt_at: float,
        head_attempts: int,
    ) -> bool: ...

    async def append_if_parked(self, webhook_id: str, tasks: Sequence[DeliveryTask]) -> bool: ...

    async def record_failed(self, task: DeliveryTask, tenant_id: str, reason: str) -> None: ...

    async def disable(self, webhook_id: str, reason: str) -> None: ...

    async def parked_among(self, webhook_ids: Sequence[str]) -> set[str]: ...

    async def set_concurrency(self, webhook_id: str, concurrency: int) -> None: ...


class PostgresStore:
    """``DeliveryStore`` on the tables ``parked_webhooks``, ``backlog``, ``failed_deliveries``."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], pause_limit: int | None = None) -> None:
        self._pool = pool
        # HOOKLANE_PAUSE_MAX_BACKLOG: a PAUSED webhook's backlog keeps at most this many.
        self._pause_limit = pause_limit

    async def park(
        self,
        webhook_id: str,
        tasks: Sequence[DeliveryTask],
        failing_since: float,
        failures: int,
        next_attempt_at: float,
        head_attempts: int,
    ) -> bool:
        """Park the webhook with ``tasks`` in order (appends if already parked); True if new."""
        return await backlog.park(
            self._pool,
            webhook_id,
            tasks,
            failing_since,
            failures,
            next_attempt_at,
            head_attempts,
            self._pause_limit,
        )

    async def append_if_parked(self, webhook_id: str, tasks: Sequence[DeliveryTask]) -> bool:
        """Append ``tasks`` if the webhook is still parked; False when it is not."""
        return await backlog.append_many_if_parked(self._pool, webhook_id, tasks, self._pause_limit)

    async def record_failed(self, task: DeliveryTask, tenant_id: str, reason: str) -> None:
        """Keep a given-up delivery for replay."""
        await failed_deliveries.record_failed(self._pool, task, tenant_id, reason)

    async def disable(self, webhook_id: str, reason: str) -> None:
        """Set the webhook DISABLED with ``reason``."""
        await webhooks.disable_webhook(self._pool, webhook_id, reason)

    async def parked_among(self, webhook_ids: Sequence[str]) -> set[str]:
        """Which of ``webhook_ids`` are parked now."""
        return await backlog.parked_among(self._pool, webhook_ids)

    async def set_concurrency(self, webhook_id: str, concurrency: int) -> None:
        """Report an unordered webhook's adaptive window (the object's ``concurrency``)."""
        await webhooks.set_concurrency(self._pool, webhook_id, concurrency)
