"""Publishing a tenant's operational events (``messages.operational``) from the deliverer.

When a lane or the backlog scheduler disables, parks, recovers or gives up on a
webhook, the ``Announcer`` builds the matching ``HOOKLANE.*`` event and publishes it
on the tenant's behalf through the normal pipeline: the operational topic's mirror
topic, keyed by tenant id (so a tenant's announcements stay in order), routed to the
tenant's other webhooks subscribed to it, signed and retried like any event.

Best effort, off the delivery path: every method returns at once and the publish runs
in a background task, bounded by ``PUBLISH_TIMEOUT_S``; a failure is logged and
dropped, never retried and never holding up a delivery or an offset. Losing one is
the price of that; publishing one twice is harmless, because operational event ids
are derived from what they announce and idempotent ingest routes an id once.

Bursts are bounded: ``DELIVERY.GAVE_UP`` is announced at most ``GAVE_UP_PER_MINUTE``
times per webhook per minute (a token bucket; the rest are counted in the log), and
PARKED is announced once per parking episode by the caller (when the parked row is
new), so a failing endpoint with thousands of deliveries produces one PARKED.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from dispatcher.delivery.attempt import AttemptResult, WebhookTarget
from dispatcher.messages import operational
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.moments import utc
from dispatcher.subscription.rate_limit import TokenBucket

log = structlog.get_logger(__name__)

Publish = Callable[[Event], Awaitable[None]]
TargetLoader = Callable[[str], Awaitable[WebhookTarget | None]]

# How long one publish may take before it is abandoned (the broker is down).
PUBLISH_TIMEOUT_S = 10.0
# GAVE_UP announcements per webhook per minute; a dead endpoint's retry window ending
# for a whole backlog would otherwise send one per delivery.
GAVE_UP_PER_MINUTE = 10
# Bound on the per-webhook memory (last errors, buckets): beyond it, start over.
MAX_TRACKED = 10_000
# Announcements in flight beyond this are dropped (the broker cannot keep up).
MAX_PENDING = 1_000


class Announcer:
    """Announces operational events about webhooks (see the module docstring).

    ``publish`` sends one built event (``Producer.publish_event``); None announces
    nothing (a worker or scheduler used without a broker producer).
    """

    def __init__(
        self,
        publish: Publish | None,
        load_target: TargetLoader,
        *,
        clock: Callable[[], float] = time.time,
        gave_up_per_minute: int = GAVE_UP_PER_MINUTE,
    ) -> None:
        self._publish = publish
        self._load_target = load_target
        self._clock = clock
        self._gave_up_rate = gave_up_per_minute / 60.0
        self._gave_up_burst = float(gave_up_per_minute)
        self._buckets: dict[str, TokenBucket] = {}
        self._suppressed: dict[str, int] = {}
        # The last failure of each webhook's lane, for PARKED's ``last_error``.
        self._last_errors: dict[str, str] = {}
        self._pending: set[asyncio.Task[None]] = set()

    # -- what happened ---------------------------------------------------------------

    def attempted(self, result: AttemptResult) -> None:
        """Remember a failed attempt's error (PARKED tells it)."""
        if result.success:
            return
        if len(self._last_errors) >= MAX_TRACKED:
            self._last_errors.clear()
        self._last_errors[result.webhook_id] = result.error or "failed"

    def disabled(self, webhook_id: str, reason: str, failing_since: float | None) -> None:
        """``webhook_id`` was set DISABLED for ``reason``."""
        since = None if failing_since is None else utc(failing_since)
        self._announce(
            webhook_id,
            lambda tenant, now: operational.webhook_disabled(
                tenant, webhook_id, reason, since, now
            ),
        )

    def parked(self, webhook_id: str, backlog: int, failing_since: float) -> None:
        """``webhook_id`` was parked (a new episode) with ``backlog`` deliveries."""
        last_error = self._last_errors.pop(webhook_id, None)
        self._announce(
            webhook_id,
            lambda tenant, now: operational.webhook_parked(
                tenant, webhook_id, backlog, utc(failing_since), last_error, now
            ),
        )

    def recovered(self, webhook_id: str, backlog: int, failing_since: float) -> None:
        """``webhook_id`` answered again; ``backlog`` deliveries drained, now unparked."""
        self._announce(
            webhook_id,
            lambda tenant, now: operational.webhook_recovered(
                tenant, webhook_id, backlog, utc(failing_since), now
            ),
        )

    def gave_up(
        self, webhook_id: str, task: DeliveryTask, attempts: int, last_error: str | None
    ) -> None:
        """A delivery of ``task`` was given up (bounded per webhook, see the module doc)."""
        event = task.event
        if not operational.announces_gave_up(event.topic) or not self._gave_up_allowed(webhook_id):
            return
        self._announce(
            webhook_id,
            lambda tenant, now: operational.delivery_gave_up(
                tenant, webhook_id, event.id, event.topic, attempts, last_error, now
            ),
        )

    async def close(self, within: float = PUBLISH_TIMEOUT_S) -> None:
        """Let announcements in flight finish (up to ``within`` s), then drop the rest."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=within)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- publishing ----------------------------------------------------------------

    def _gave_up_allowed(self, webhook_id: str) -> bool:
        bucket = self._buckets.get(webhook_id)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._buckets.clear()
            bucket = self._buckets[webhook_id] = TokenBucket(
                rate=self._gave_up_rate, burst=self._gave_up_burst
            )
        if bucket.acquire(self._clock()) == 0.0:
            suppressed = self._suppressed.pop(webhook_id, 0)
            if suppressed:
                log.warning("announcer.gave_up_suppressed", webhook_id=webhook_id, count=suppressed)
            return True
        if len(self._suppressed) >= MAX_TRACKED:
            self._suppressed.clear()
        self._suppressed[webhook_id] = self._suppressed.get(webhook_id, 0) + 1
        return False

    def _announce(self, webhook_id: str, build: Callable[[str, datetime], Event]) -> None:
        if self._publish is None:
            return
        if len(self._pending) >= MAX_PENDING:
            log.warning("announcer.dropped", webhook_id=webhook_id, reason="too many pending")
            return
        task = asyncio.create_task(self._send(webhook_id, build, self._publish))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(
        self, webhook_id: str, build: Callable[[str, datetime], Event], publish: Publish
    ) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                target = await self._load_target(webhook_id)
                if target is None:
                    return  # deleted meanwhile: no tenant left to tell
                event = build(target.tenant_id, utc(self._clock()))
                await publish(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("announcer.publish_failed", webhook_id=webhook_id, error=repr(exc))
            return
        log.info("announcer.published", webhook_id=webhook_id, topic=event.topic, id=event.id)
