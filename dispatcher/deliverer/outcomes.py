"""Carrying out the delivery policy's decision: one executor for the lanes and the backlog.

``policy.next_step`` decides what becomes of a delivery after an attempt; ``Outcomes``
carries that ``Step`` out, the same way wherever the delivery waits:

- every attempt gets its line in the delivery log (``delivery.succeeded``, sampled;
  ``delivery.failed`` with the ``action`` taken);
- DELIVERED: the holder finishes it; ``deliveries_total{delivered}``;
- RETRY: the holder keeps it for ``next_attempt_at`` (a lane in memory, a parked
  webhook's backlog in Postgres);
- PARK: the holder moves it, and what waits behind it, to the backlog (a lane) or
  reschedules the backlog on the long schedule (the scheduler);
- GIVE_UP: the holder records it in ``failed_deliveries`` (kept for replay); once
  recorded, ``deliveries_total{gave_up}``, ``delivery.gave_up`` in the log and a
  ``DELIVERY.GAVE_UP`` announcement;
- DISABLE: the webhook is set DISABLED (``webhook.disabled``, a ``WEBHOOK.DISABLED``
  announcement; ``webhook.disable_failed`` if Postgres refused) and the holder keeps its
  deliveries in the backlog, due at once, for when it is enabled again.

Where a delivery waits is a ``Holding``: ``parking.LaneHolding`` (a delivery of an
in-memory lane) or ``scheduler.BacklogHolding`` (the head of a parked webhook's
backlog). The holders differ only in where they keep or record the delivery.

``attempt`` is the one guard around an attempt: an exception inside Hooklane (a bug,
a task that cannot be encoded) is logged once with the webhook id
(``delivery.internal_error``) and becomes a non-retriable failed attempt. The policy
then gives the delivery up, recorded and replayable (counted in
``deliveries_total{gave_up}``, announced), and the lane or the scheduler goes on with
the next one: neither dies, and a head failing the same way at every try cannot wedge
its backlog, nor count against the receiver (no failure streak, no parking, no
auto-disable for Hooklane's own fault).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import asyncpg
import structlog

from dispatcher.deliverer.announcer import Announcer
from dispatcher.delivery.attempt import AttemptResult, WebhookTarget, attempt_delivery
from dispatcher.delivery.delivery_logs import DeliveryLog
from dispatcher.delivery.http.sender import Sender
from dispatcher.delivery.policy import Outcome, Step
from dispatcher.messages.wire import DeliveryTask
from dispatcher.ops.metrics import DelivererMetrics
from dispatcher.store import webhook_store as webhooks
from dispatcher.store.db import TRANSIENT_ERRORS

log = structlog.get_logger(__name__)


class Holding(Protocol):
    """Where one delivery waits between attempts: a lane in memory, or the backlog."""

    async def delivered(self, now: float) -> None:
        """A 2xx: the delivery is done."""

    async def retry(self, step: Step, now: float) -> None:
        """Keep the delivery for another attempt at ``step.next_attempt_at``."""

    async def park(self, step: Step, now: float) -> None:
        """Keep the delivery in the backlog for ``step.next_attempt_at`` (long schedule)."""

    async def give_up(self, tenant_id: str, reason: str) -> bool:
        """Record the delivery as failed (kept for replay); False: not recorded, kept."""

    async def keep_disabled(self, step: Step, now: float) -> None:
        """The webhook was disabled: keep its deliveries in the backlog until re-enabled."""


def internal_failure(
    target: WebhookTarget, task: DeliveryTask, attempt: int, now: float, error: Exception
) -> AttemptResult:
    """A non-retriable result for an attempt that failed inside Hooklane, not at the receiver."""
    event = task.event
    return AttemptResult(
        webhook_id=target.id,
        tenant_id=target.tenant_id,
        event_id=event.id,
        topic=event.topic,
        attempt=attempt,
        attempted_at=now,
        duration_ms=0.0,
        error=f"internal error: {type(error).__name__}: {error}",
        error_class="InternalError",
        retriable=False,
        test=task.kind == "test",
    )


class Outcomes:
    """Makes attempts and carries out the policy's steps (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        announcer: Announcer,
        clock: Callable[[], float],
        *,
        log_sample: float = 1.0,
        metrics: DelivererMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._announcer = announcer
        self._clock = clock
        # Success lines sampled (HOOKLANE_LOG_SAMPLE), failures always.
        self._delivery_log = DeliveryLog(log_sample)
        self._metrics = metrics  # None: not counted (tests, benchmarks)

    async def attempt(
        self,
        sender: Sender,
        target: WebhookTarget,
        task: DeliveryTask,
        attempt: int,
        *,
        parked_since: float | None = None,
    ) -> AttemptResult:
        """One attempt; an exception inside Hooklane becomes a non-retriable failure."""
        try:
            return await attempt_delivery(
                sender, target, task, attempt, self._clock, parked_since=parked_since
            )
        except Exception as exc:
            log.exception("delivery.internal_error", webhook_id=target.id, event_id=task.event.id)
            return internal_failure(target, task, attempt, self._clock(), exc)

    async def carry_out(
        self,
        step: Step,
        result: AttemptResult,
        target: WebhookTarget,
        task: DeliveryTask,
        holding: Holding,
    ) -> None:
        """Carry out ``step``, the policy's answer to ``result``, for ``task`` in ``holding``."""
        outcome = step.outcome
        self._delivery_log.attempted(result, outcome.value)
        now = self._clock()
        if outcome is Outcome.DELIVERED:
            await holding.delivered(now)
            if self._metrics is not None:
                self._metrics.delivered.inc()
        elif outcome is Outcome.RETRY:
            await holding.retry(step, now)
        elif outcome is Outcome.PARK:
            await holding.park(step, now)
        elif outcome is Outcome.GIVE_UP:
            assert step.reason is not None
            if await holding.give_up(target.tenant_id, step.reason):
                self._gave_up(result, target, task, step.reason)
        else:
            assert outcome is Outcome.DISABLE and step.reason is not None
            await self._disable(target.id, step)
            await holding.keep_disabled(step, now)

    def _gave_up(
        self, result: AttemptResult, target: WebhookTarget, task: DeliveryTask, reason: str
    ) -> None:
        if self._metrics is not None:
            self._metrics.gave_up.inc()
        log.info(
            "delivery.gave_up",
            webhook_id=target.id,
            event_id=result.event_id,
            attempt=result.attempt,
            trace_id=result.trace_id,
            reason=reason,
        )
        self._announcer.gave_up(target.id, task, result.attempt, reason)

    async def _disable(self, webhook_id: str, step: Step) -> None:
        assert step.reason is not None
        try:
            await webhooks.disable_webhook(self._pool, webhook_id, step.reason)
        except TRANSIENT_ERRORS as exc:
            # Its deliveries go to the backlog anyway, due at once: the scheduler tries
            # again, and the next 410 disables it then.
            log.warning("webhook.disable_failed", webhook_id=webhook_id, error=str(exc))
            return
        log.warning("webhook.disabled", webhook_id=webhook_id, reason=step.reason)
        self._announcer.disabled(webhook_id, step.reason, step.failing_since)
