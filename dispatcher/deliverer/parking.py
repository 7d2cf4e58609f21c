"""Moving a lane's deliveries between memory and Postgres (the backlog).

``Parking`` is the worker's part that writes to the ``DeliveryStore``:

- ``park``: a lane failing past the in-memory window (or a webhook that is DISABLED,
  or answered 410) moves its head and every pending delivery, in order, to the
  backlog; the offsets are finished, so the partition moves on.
- ``spill``: later deliveries of a parked webhook are appended to its backlog, in
  order; when ``append_if_parked`` answers False the backlog scheduler has drained and
  unparked the webhook, and the lane delivers from memory again.
- ``give_up``: a delivery that will never succeed is recorded for replay.

When spans are exported, each delivery moved to the backlog gets a ``hooklane.park``
span in its event's trace (``dispatcher.ops.tracing``; the drain attempt later shows
the time parked).

Each of these is announced to the tenant's other webhooks (``Announcer``): a give-up
(GAVE_UP), a disabling (DISABLED) and a new parking episode of a failing lane (PARKED;
not for a DISABLED webhook, whose DISABLED said it, nor for appends to a backlog).

A lane has at most one writer at a time (``lane.storing``), set synchronously before
the write starts so nothing else is dispatched or written meanwhile. A failed write
leaves the deliveries in memory, to try again ``STORE_RETRY_S`` later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from dispatcher.deliverer.announcer import Announcer
from dispatcher.deliverer.lane import Lane, Pending
from dispatcher.deliverer.lane_store import DeliveryStore
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.ops import tracing
from dispatcher.ops.metrics import DelivererMetrics
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
        store: DeliveryStore,
        clock: Callable[[], float],
        finish: Callable[[Pending], None],
        settle: Callable[[Lane], None],
        announcer: Announcer,
        metrics: DelivererMetrics | None = None,
    ) -> None:
        self._store = store
        self._announcer = announcer
        # deliveries_total{gave_up,parked}: counted here, once each write succeeded.
        self._metrics = metrics
        self._clock = clock
        self._finish = finish  # a delivery is done: its offset may be committed
        self._settle = settle  # a write ended: forget or re-schedule the lane

    async def give_up(self, lane: Lane, target: WebhookTarget, entry: Pending, reason: str) -> None:
        """Record ``entry`` as failed (kept for replay) and finish it."""
        try:
            await self._store.record_failed(entry.task, target.tenant_id, reason)
        except TRANSIENT_ERRORS as exc:
            log.warning("delivery.record_failed_error", error=str(exc))
            lane.requeue(entry)  # not recorded: not finished; try again shortly
            lane.next_attempt_at = self._clock() + STORE_RETRY_S
            return
        if self._metrics is not None:
            self._metrics.gave_up.inc()
        self._finish(entry)
        self._announcer.gave_up(target.id, entry.task, entry.attempts, reason)

    async def disable(
        self, lane: Lane, entry: Pending, reason: str, failing_since: float, failures: int
    ) -> None:
        """Disable the webhook (410 Gone, failing too long); keep its deliveries in the backlog."""
        try:
            await self._store.disable(lane.webhook_id, reason)
        except TRANSIENT_ERRORS as exc:
            log.warning("webhook.disable_failed", webhook_id=lane.webhook_id, error=str(exc))
        else:
            log.warning("webhook.disabled", webhook_id=lane.webhook_id, reason=reason)
            self._announcer.disabled(lane.webhook_id, reason, failing_since)
        await self.park(lane, entry, failing_since, failures, self._clock(), announce=False)

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
        if lane.storing:  # already on its way to the backlog: follow the others
            if head is not None:
                lane.requeue(head)
            return None
        lane.storing = True
        lane.parked = True
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
        try:
            created = await self._store.park(
                lane.webhook_id,
                [entry.task for entry in entries],
                failing_since,
                failures,
                next_attempt_at,
                head_attempts,
            )
        except TRANSIENT_ERRORS as exc:
            log.warning("lane.park_failed", webhook_id=lane.webhook_id, error=str(exc))
            lane.parked = False
            for entry in entries:
                lane.requeue(entry)
            lane.next_attempt_at = self._clock() + STORE_RETRY_S
        else:
            log.info("lane.parked", webhook_id=lane.webhook_id, deliveries=len(entries))
            if created and announce and failures:
                self._announcer.parked(lane.webhook_id, len(entries), failing_since)
            if self._metrics is not None:
                self._metrics.parked.inc(len(entries))
            _trace_parked(lane.webhook_id, entries)
            for entry in entries:
                self._finish(entry)
            lane.recovered()
        finally:
            lane.storing = False
        self._settle(lane)

    async def spill(self, lane: Lane) -> None:
        """Append the pending deliveries of a parked lane to its backlog, in order.

        The caller sets ``lane.storing`` before starting this task.
        """
        retry = False
        try:
            while lane.pending and lane.parked:
                batch = list(lane.pending)[:SPILL_BATCH]
                appended = await self._store.append_if_parked(
                    lane.webhook_id, [entry.task for entry in batch]
                )
                if not appended:  # the scheduler drained and unparked it: back to memory
                    log.info("lane.unparked", webhook_id=lane.webhook_id)
                    lane.parked = False
                    lane.recovered()
                    break
                if self._metrics is not None:
                    self._metrics.parked.inc(len(batch))
                _trace_parked(lane.webhook_id, batch)
                stored = {id(entry) for entry in batch}
                # Entries revoked meanwhile were dropped (and counted) already.
                for entry in lane.drop(lambda entry: id(entry) in stored):  # noqa: B023
                    self._finish(entry)
        except TRANSIENT_ERRORS as exc:
            log.warning("lane.append_failed", webhook_id=lane.webhook_id, error=str(exc))
            retry = True
        finally:
            lane.storing = False
        if retry:
            asyncio.get_running_loop().call_later(STORE_RETRY_S, self._settle, lane)
        else:
            self._settle(lane)


def _trace_parked(webhook_id: str, entries: list[Pending]) -> None:
    tracer = tracing.ACTIVE
    if tracer is not None:
        for entry in entries:
            event = entry.task.event
            tracing.parked(tracer, event.trace, webhook_id, event.id)
