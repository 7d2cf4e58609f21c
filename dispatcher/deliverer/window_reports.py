"""Reporting unordered lanes' adaptive windows to Postgres, throttled.

An unordered webhook's ``concurrency`` (its object shows it) follows the lane's
adaptive window, which may change with every answer. ``WindowReports`` writes it at
most every ``REPORT_WINDOW_EVERY_S`` per webhook, and the last value of a burst too (a
trailing timer), so the object ends up exact without a write per answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import structlog

from dispatcher.store import webhook_store as webhooks
from dispatcher.store.db import TRANSIENT_ERRORS

log = structlog.get_logger(__name__)

# The adaptive window is written to the webhook row at most this often per webhook.
REPORT_WINDOW_EVERY_S = 2.0


class WindowReports:
    """Throttled writes of adaptive windows (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        start_task: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._pool = pool
        self._start_task = start_task  # the worker's: tasks it waits for on close
        # Last reported (value, time.monotonic()), the latest value waiting for its
        # report, and the timers of those reports; per webhook id.
        self._reported: dict[str, tuple[int, float]] = {}
        self._due: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def report_soon(self, webhook_id: str, window: int) -> None:
        """Have ``window`` written as the webhook's concurrency (now, or when allowed)."""
        self._due[webhook_id] = window
        if webhook_id in self._timers:
            return  # a report is scheduled: it writes the latest value
        reported = self._reported.get(webhook_id)
        if reported is not None and reported[0] == window:
            del self._due[webhook_id]
            return
        delay = 0.0
        if reported is not None:
            delay = max(0.0, reported[1] + REPORT_WINDOW_EVERY_S - time.monotonic())
        self._timers[webhook_id] = asyncio.get_running_loop().call_later(
            delay, self._flush, webhook_id
        )

    def cancel(self) -> None:
        """Drop the scheduled reports (the worker stops)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _flush(self, webhook_id: str) -> None:
        self._timers.pop(webhook_id, None)
        window = self._due.pop(webhook_id, None)
        reported = self._reported.get(webhook_id)
        if window is None or (reported is not None and reported[0] == window):
            return
        self._reported[webhook_id] = (window, time.monotonic())
        self._start_task(self._write(webhook_id, window))

    async def _write(self, webhook_id: str, window: int) -> None:
        try:
            await webhooks.set_concurrency(self._pool, webhook_id, window)
        except TRANSIENT_ERRORS as exc:
            # Only the webhook object's ``concurrency`` is stale; the next change retries.
            self._reported.pop(webhook_id, None)
            log.warning("lane.window_report_failed", webhook_id=webhook_id, error=str(exc))
        else:
            log.debug("lane.window_reported", webhook_id=webhook_id, window=window)
