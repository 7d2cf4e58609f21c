"""Moving a lane's deliveries between memory and Postgres (the backlog).

``Parking`` is the worker's part that writes to Postgres (``dispatcher.store.backlog``,
``dispatcher.store.failed_deliveries``):

- ``park``: a lane failing past the in-memory window (or a webhook that is DISABLED,
  or answered 410) moves its head and every pending delivery, in order, to the
  backlog; the offsets are finished, so the partition moves on.
- ``spill``: later deliveries of a parked webhook are appended to its backlog, in
  order; when ``append_many_if_parked`` answers False the backlog scheduler has drained
  and unparked the webhook, and the lane delivers from memory again.
- ``give_up``: a delivery that will never succeed is recorded for replay.

``LaneHolding`` is a lane's delivery as the outcome executor (``outcomes``) sees it:
the executor decides the metrics, log lines and announcements of a step; the lane and
``Parking`` keep, move or record the delivery.

When spans are exported, each delivery moved to the backlog gets a ``hooklane.park``
span in its event's trace (``dispatcher.ops.tracing``; the drain attempt later shows
the time parked).

A new parking episode of a failing lane is announced to the tenant's other webhooks
(PARKED; not for a DISABLED webhook, whose DISABLED said it, nor for appends to a
backlog).

A lane has at most one writer at a time (``lane.start_storing()``), taken synchronously
before the write starts so nothing else is dispatched or written meanwhile. A failed
write leaves the deliveries in memory, to try again ``STORE_RETRY_S`` later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from dispatcher.deliverer.announcer import Announcer
from dispatcher.deliverer.lane import Lane, Pending
from dispatcher.delivery.policy import Step
from dispatcher.ops import tracing
from dispatcher.ops.metrics import DelivererMetrics
from dispatcher.store import backlog, failed_deliveries
from dispatcher.store.db import TRANSIENT_ERRORS

log = structlog.get_logger(__name__)

# Deliveries appended to a parked backlog per round trip.
SPILL_BATCH = 500
# After a failed Postgres write, try again this much later.
STORE_RETRY_S = 1.0


class Parking:
    """The backlog side of the worker (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        clock: Callable[[], float],
        finish: Callable[[Pending], None],
        settle: Callable[[Lane], None],
        announcer: Announcer,
        metrics: DelivererMetrics | None = None,
        *,
        pause_limit: int | None = None,
    ) -> None:
        self._pool = pool
        # HOOKLANE_PAUSE_MAX_BACKLOG: a PAUSED webhook's backlog keeps at most this many.
        self._pause_limit = pause_limit
        self._announcer = announcer
        # deliveries_total{parked}: counted here, once each write succeeded.
        self._metrics = metrics
        self._clock = clock
        self.finish = finish  # a delivery is done: its offset may be committed
        self._settle = settle  # a write ended: forget or re-schedule the lane

    async def give_up(self, lane: Lane, entry: Pending, tenant_id: str, reason: str) -> bool:
        """Record ``entry`` as failed (kept for replay) and finish it; False if not recorded."""
        try:
            await failed_deliveries.record_failed(self._pool, entry.task, tenant_id, reason)
        except TRANSIENT_ERRORS as exc:
            log.warning("delivery.record_failed_error", error=str(exc))
            lane.requeue(entry)  # not recorded: not finished; try again shortly
            lane.wait_until(self._clock() + STORE_RETRY_S)
            return False
        self.finish(entry)
        return True

    async def park(
        self,
        lane: Lane,
        head: Pending | None,
        failing_since: float,
        failures: int,
        next_attempt_at: float,
        *,
        announce: bool = True,
    ) -> None:
        """Move ``head`` and every pending delivery of ``lane``, in order, to the backlog."""
        entries = self.begin(lane, head)
        if entries is not None:
            head_attempts = head.attempts if head is not None else 0
            await self.store(
                lane,
                entries,
                head_attempts,
                failing_since,
                failures,
                next_attempt_at,
                announce=announce,
            )

    def begin(self, lane: Lane, head: Pending | None) -> list[Pending] | None:
        """Take the lane out of service now; None when a write is already under way."""
        if not lane.start_storing():  # already on its way to the backlog: follow the others
            if head is not None:
                lane.requeue(head)
            return None
        return ([head] if head is not None else []) + lane.drain()

    async def store(
        self,
        lane: Lane,
        entries: list[Pending],
        head_attempts: int,
        failing_since: float,
        failures: int,
        next_attempt_at: float,
        *,
        announce: bool = True,
    ) -> None:
        """Write the entries taken by ``begin`` as the webhook's parked backlog.

        A new parking episode of a failing lane is announced (PARKED) unless ``announce``
        is False; a lane parked because its webhook is DISABLED (no failures) is not.
        """
        parked = True
        try:
            created = await backlog.park(
                self._pool,
                lane.webhook_id,
                [entry.task for entry in entries],
                failing_since,
                failures,
                next_attempt_at,
                head_attempts,
                self._pause_limit,
            )
        except TRANSIENT_ERRORS as exc:
            log.warning("lane.park_failed", webhook_id=lane.webhook_id, error=str(exc))
            parked = False
            for entry in entries:
                lane.requeue(entry)
            lane.wait_until(self._clock() + STORE_RETRY_S)
        else:
            log.info("lane.parked", webhook_id=lane.webhook_id, deliveries=len(entries))
            if created and announce and failures:
                self._announcer.parked(lane.webhook_id, len(entries), failing_since)
            if self._metrics is not None:
                self._metrics.parked.inc(len(entries))
            _trace_parked(lane.webhook_id, entries)
            for entry in entries:
                self.finish(entry)
            lane.recovered()
        finally:
            lane.stored(parked)
        self._settle(lane)

    async def spill(self, lane: Lane) -> None:
        """Append the pending deliveries of a parked lane to its backlog, in order.

        The caller made the lane the backlog's writer (``start_storing``) before starting
        this task.
        """
        retry = False
        parked = True
        try:
            while lane.pending:
                batch = list(lane.pending)[:SPILL_BATCH]
                appended = await backlog.append_many_if_parked(
                    self._pool, lane.webhook_id, [entry.task for entry in batch], self._pause_limit
                )
                if not appended:  # the scheduler drained and unparked it: back to memory
                    log.info("lane.unparked", webhook_id=lane.webhook_id)
                    parked = False
                    lane.recovered()
                    break
                if self._metrics is not None:
                    self._metrics.parked.inc(len(batch))
                _trace_parked(lane.webhook_id, batch)
                stored = {id(entry) for entry in batch}
                # Entries revoked meanwhile were dropped (and counted) already.
                for entry in lane.drop(lambda entry: id(entry) in stored):  # noqa: B023
                    self.finish(entry)
        except TRANSIENT_ERRORS as exc:
            log.warning("lane.append_failed", webhook_id=lane.webhook_id, error=str(exc))
            retry = True
        finally:
            lane.stored(parked)
        if retry:
            asyncio.get_running_loop().call_later(STORE_RETRY_S, self._settle, lane)
        else:
            self._settle(lane)


class LaneHolding:
    """A delivery of an in-memory lane, as the outcome executor sees it (``outcomes.Holding``)."""

    __slots__ = ("_entry", "_lane", "_parking", "_retry")

    def __init__(
        self,
        parking: Parking,
        lane: Lane,
        entry: Pending,
        retry: Callable[[Lane, float], None],
    ) -> None:
        self._parking = parking
        self._lane = lane
        self._entry = entry
        self._retry = retry  # the worker's: wake the lane at the time (or park it early)

    async def delivered(self, now: float) -> None:
        """Finish the delivery; the endpoint is healthy again."""
        self._lane.succeeded()
        self._parking.finish(self._entry)

    async def retry(self, step: Step, now: float) -> None:
        """Put the delivery back at its place in the lane, which waits until the retry."""
        assert step.next_attempt_at is not None
        self._lane.failed(self._entry, now, step.next_attempt_at)
        self._retry(self._lane, step.next_attempt_at)

    async def park(self, step: Step, now: float) -> None:
        """Move the delivery and the rest of the lane to the backlog."""
        assert step.failing_since is not None and step.next_attempt_at is not None
        self._lane.finished()
        await self._parking.park(
            self._lane, self._entry, step.failing_since, step.failures, step.next_attempt_at
        )

    async def give_up(self, tenant_id: str, reason: str) -> bool:
        """Record the delivery as failed and finish it (False: kept, tried again soon)."""
        self._lane.finished()
        return await self._parking.give_up(self._lane, self._entry, tenant_id, reason)

    async def keep_disabled(self, step: Step, now: float) -> None:
        """Move the lane to the backlog, due at once (no PARKED: DISABLED said it)."""
        assert step.failing_since is not None
        self._lane.finished()
        await self._parking.park(
            self._lane, self._entry, step.failing_since, step.failures, now, announce=False
        )


def _trace_parked(webhook_id: str, entries: list[Pending]) -> None:
    tracer = tracing.ACTIVE
    if tracer is not None:
        for entry in entries:
            event = entry.task.event
            tracing.parked(tracer, event.trace, webhook_id, event.id)
