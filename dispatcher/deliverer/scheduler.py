"""The backlog scheduler: retries parked webhooks on the long schedule and drains them.

Runs inside every deliverer process; several can run at once. Each pass claims due,
ENABLED parked webhooks (``FOR UPDATE SKIP LOCKED``; a claim is a lease,
``leased_until``, renewed while working) and handles each in its own task:

- retry the backlog head; on 2xx drain the backlog in order at full speed, or at the
  webhook's ``rate_limit`` (the lanes' token bucket, ``dispatcher.subscription.rate_limit``; rows
  fetched in batches, each deleted after its 2xx), then unpark (race-free, see
  ``dispatcher.store.backlog``);
- on failure, store the next attempt time from the long schedule (``dispatcher.delivery.policy``);
- a delivery past its retry window (or to a blocked destination, or failing inside
  Hooklane) moves to ``failed_deliveries`` and the next one is tried;
- ``410 Gone``, or continuous failure for ``auto_disable_after``, disables the
  webhook; DISABLED webhooks are left parked until they are re-enabled. A parked
  webhook that is re-enabled or edited is retried at once, not at its next slot.

Each step is carried out by ``outcomes`` (the executor the lanes use too), with the
backlog head as its ``BacklogHolding``.

No busy loop: between passes it sleeps until the earliest ``next_attempt_at`` (at
most ``MAX_SLEEP_S``), woken early by NOTIFY on ``hooklane_parked`` (something was
parked or rescheduled) and ``hooklane_webhooks`` (a webhook was re-enabled).
Old attempts are purged from the attempt log once an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from dispatcher.deliverer.announcer import Announcer
from dispatcher.deliverer.attempt_log import AttemptLog
from dispatcher.deliverer.outcomes import Outcomes
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.http.sender import Sender
from dispatcher.delivery.policy import (
    Outcome,
    Random,
    RetryPolicy,
    Step,
    Streak,
    default_rng,
    effective_policy,
    next_step,
)
from dispatcher.ops.metrics import DelivererMetrics
from dispatcher.settings import Settings
from dispatcher.store import attempt_store, backlog
from dispatcher.store.backlog import BacklogEntry, ParkedWebhook
from dispatcher.store.db import TRANSIENT_ERRORS, try_advisory_lock
from dispatcher.store.notifications import Notifications, Subscription
from dispatcher.subscription.rate_limit import TokenBucket, rebuilt

log = structlog.get_logger(__name__)

WEBHOOKS_CHANNEL = "hooklane_webhooks"
CHANNELS = ("hooklane_parked", WEBHOOKS_CHANNEL)
MAX_SLEEP_S = 30.0
RECONNECT_DELAY_S = 1.0
# When due work is locked by someone else for a moment, do not spin on it.
MIN_SLEEP_S = 0.05
CLAIM_BATCH = 16
MAX_CONCURRENT = 32
DRAIN_BATCH = 100
HOUSEKEEPING_INTERVAL_S = 3600.0
# Room in a lease for the Postgres round trips around the attempts.
LEASE_MARGIN_S = 10.0
# Advisory lock so only one process purges at a time.
_PURGE_LOCK = 7_405_131_005

TargetLoader = Callable[[str], Awaitable[WebhookTarget | None]]


class BacklogHolding:
    """A parked webhook's backlog head, as the outcome executor sees it (``outcomes.Holding``).

    Postgres errors are not caught here: they end the webhook's run, and its claim
    runs out and is taken again (at least once, in order).
    """

    __slots__ = ("_entry", "_pool")

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], entry: BacklogEntry) -> None:
        self._pool = pool
        self._entry = entry

    async def delivered(self, now: float) -> None:
        """Nothing yet: the drain deletes each delivered run in one statement."""

    async def retry(self, step: Step, now: float) -> None:
        """Parked already: wait for the next slot (as ``park``)."""
        await self.park(step, now)

    async def park(self, step: Step, now: float) -> None:
        """Count the attempt and store the streak and the next slot; the claim ends."""
        assert step.next_attempt_at is not None and step.failing_since is not None
        webhook_id = self._entry.task.webhook_id
        await backlog.attempted(self._pool, webhook_id, self._entry.seq)
        await backlog.reschedule(
            self._pool,
            webhook_id,
            failures=step.failures,
            failing_since=step.failing_since,
            next_attempt_at=step.next_attempt_at,
        )
        log.debug(
            "scheduler.rescheduled",
            webhook_id=webhook_id,
            failures=step.failures,
            in_s=round(step.next_attempt_at - now, 3),
        )

    async def give_up(self, tenant_id: str, reason: str) -> bool:
        """Move the entry to ``failed_deliveries`` (one transaction)."""
        await backlog.give_up(self._pool, self._entry, tenant_id, reason)
        return True

    async def keep_disabled(self, step: Step, now: float) -> None:
        """End the claim: a DISABLED webhook is not claimed until it is re-enabled."""
        await backlog.release(self._pool, self._entry.task.webhook_id)


class BacklogScheduler:
    """Retries and drains parked webhooks (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool[asyncpg.Record],
        sender: Sender,
        load_target: TargetLoader,
        attempt_log: AttemptLog,
        notifications: Notifications,
        rng: Random | None = None,
        clock: Callable[[], float] = time.time,
        announcer: Announcer | None = None,
        metrics: DelivererMetrics | None = None,
    ) -> None:
        self._settings = settings
        # Without an announcer (no producer), disabling and recovery are only logged.
        self._announcer = announcer or Announcer(None, load_target)
        # deliveries_total{delivered,gave_up}; metrics None: not counted
        self._outcomes = Outcomes(
            pool, self._announcer, clock, log_sample=settings.log_sample, metrics=metrics
        )
        self._pool = pool
        self._sender = sender
        self._load_target = load_target
        self._attempt_log = attempt_log
        self._notifications = notifications
        self._rng = rng or default_rng()
        self._clock = clock
        self.policy = RetryPolicy.from_settings(settings)
        # A claim is a lease: long enough for a few attempts at the delivery timeout
        # (it is renewed at half-time), and short, because when its holder dies the
        # webhook's backlog waits for the lease to run out.
        self.lease_s = 3 * settings.delivery_timeout_s + LEASE_MARGIN_S
        self._wake = asyncio.Event()
        self._stopping = False
        # Set by ``stop()``: ends a drain's wait for its rate limit's next token.
        self._stopped = asyncio.Event()
        self._active: dict[str, asyncio.Task[None]] = {}
        # Webhooks changed (re-enabled, edited) since the last pass.
        self._changed: list[str] = []
        self._next_housekeeping = 0.0

    def stop(self) -> None:
        """Ask ``run()`` to finish the current attempts and return."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        """Loop until ``stop()``: claim due webhooks, work on them, sleep until the next."""
        listener = await self._listen()
        try:
            while not self._stopping:
                self._wake.clear()
                await self._housekeeping()
                await self._retry_changed()
                claimed = await self._claim()
                for parked in claimed:
                    self._start(parked)
                await self._sleep(bool(claimed))
        finally:
            await self._notifications.unsubscribe(listener)
            await self._finish_active()

    # --- the main loop -------------------------------------------------------------

    async def _retry_changed(self) -> None:
        # A parked webhook that was re-enabled or edited (say, a fixed URL) is retried
        # now rather than at its next long-schedule slot, hours away.
        changed, self._changed = set(self._changed), []
        for webhook_id in changed:
            try:
                await backlog.retry_now(self._pool, webhook_id, self._clock())
            except ValueError:
                continue  # not a uuid: not a webhook id
            except TRANSIENT_ERRORS as exc:
                log.warning("scheduler.retry_now_failed", webhook_id=webhook_id, error=str(exc))

    async def _claim(self) -> list[ParkedWebhook]:
        room = MAX_CONCURRENT - len(self._active)
        if room <= 0:
            return []
        try:
            claimed = await backlog.claim_due(
                self._pool, self._clock(), self.lease_s, min(room, CLAIM_BATCH)
            )
        except TRANSIENT_ERRORS as exc:
            log.warning("scheduler.claim_failed", error=str(exc))
            return []
        return [p for p in claimed if p.webhook_id not in self._active]

    async def _sleep(self, claimed: bool) -> None:
        if self._stopping:
            return
        delay = MAX_SLEEP_S
        if len(self._active) < MAX_CONCURRENT:
            try:
                due = await backlog.next_due_at(self._pool)
            except TRANSIENT_ERRORS as exc:
                log.warning("scheduler.query_failed", error=str(exc))
                due = None
                delay = RECONNECT_DELAY_S
            if due is not None:
                delay = min(delay, max(due - self._clock(), 0.0 if claimed else MIN_SLEEP_S))
        # Once per pass: how long it may sleep and how many webhooks it works on now.
        log.debug("scheduler.sleeping", seconds=round(delay, 3), active=len(self._active))
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _start(self, parked: ParkedWebhook) -> None:
        task = asyncio.create_task(self._work(parked), name=f"backlog-{parked.webhook_id}")
        self._active[parked.webhook_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._active.pop(parked.webhook_id, None)
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "scheduler.work_failed",
                    webhook_id=parked.webhook_id,
                    error=repr(finished.exception()),
                )
            self._wake.set()

        task.add_done_callback(done)

    async def _finish_active(self) -> None:
        tasks = list(self._active.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._settings.delivery_timeout_s + 1)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- one parked webhook ---------------------------------------------------------

    async def _work(self, parked: ParkedWebhook) -> None:
        webhook_id = parked.webhook_id
        target = await self._load_target(webhook_id)
        if target is None:
            await backlog.drop_orphans(self._pool)
            return
        if not target.enabled:
            await self._release(webhook_id)
            return
        streak = Streak(
            parked.failures,
            parked.failing_since,
            webhook_failing_since=parked.webhook_failing_since,
        )
        lease_until = self._clock() + self.lease_s
        drained = 0
        bucket: TokenBucket | None = None
        while not self._stopping:
            entries = await backlog.head(self._pool, webhook_id, DRAIN_BATCH)
            if not entries:
                if await backlog.unpark(self._pool, webhook_id):
                    log.info("scheduler.unparked", webhook_id=webhook_id)
                    # A failure episode ended with a 2xx (not given up to the end, not
                    # a re-enabled webhook that never failed).
                    if parked.failures and drained:
                        self._announcer.recovered(webhook_id, drained, parked.failing_since)
                    return
                continue  # something was appended meanwhile: keep draining
            # Delivered entries are deleted once per run, not one statement each; a
            # crash before that re-sends at most one batch (at-least-once).
            drained_through: int | None = None
            try:
                for entry in entries:
                    bucket = rebuilt(bucket, target.rate_limit)
                    lease_until = await self._pace(bucket, webhook_id, lease_until)
                    if self._stopping:
                        break
                    outcome = await self._attempt(target, entry, streak)
                    if outcome is Outcome.DELIVERED:
                        streak = Streak(0, self._clock())  # the streak starts over
                        drained_through = entry.seq
                        drained += 1
                    elif outcome is not Outcome.GIVE_UP:
                        return  # rescheduled or disabled
                    if self._clock() > lease_until - self.lease_s / 2:
                        lease_until = self._clock() + self.lease_s
                        await backlog.renew_lease(self._pool, webhook_id, lease_until)
            finally:
                if drained_through is not None:
                    await backlog.delivered_through(self._pool, webhook_id, drained_through)
            if self._stopping:
                break
            # Re-check the state between batches: the API may have disabled it.
            refreshed = await self._load_target(webhook_id)
            if refreshed is None or not refreshed.enabled:
                await self._release(webhook_id)
                return
            target = refreshed
        # Stopping mid-drain: let any scheduler pick it up again right away.
        await self._release(webhook_id)

    async def _pace(self, bucket: TokenBucket | None, webhook_id: str, lease_until: float) -> float:
        """Wait for the rate limit's next token, keeping the lease; returns the lease's end."""
        while bucket is not None and not self._stopping:
            now = self._clock()
            wait = bucket.acquire(now)
            if wait <= 0:
                break
            if now + wait > lease_until - self.lease_s / 2:
                lease_until = now + wait + self.lease_s
                await backlog.renew_lease(self._pool, webhook_id, lease_until)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), wait)
        return lease_until

    async def _release(self, webhook_id: str) -> None:
        # A DISABLED webhook is not claimed until it is re-enabled; then it resumes
        # without waiting for the lease to run out.
        await backlog.release(self._pool, webhook_id)

    async def _attempt(self, target: WebhookTarget, entry: BacklogEntry, streak: Streak) -> Outcome:
        """Try one backlog entry and carry out the policy's step for it.

        DELIVERED and GIVE_UP go on with the next entry; the others end this run.
        """
        # An exception inside Hooklane comes back as a failed attempt (outcomes).
        result = await self._outcomes.attempt(
            self._sender, target, entry.task, entry.attempts + 1, parked_since=entry.enqueued_at
        )
        self._attempt_log.record(result)
        now = self._clock()
        # The retry window is per delivery: from when it was parked, or from when the
        # webhook last started failing (e.g. after a re-enable), if later.
        state = dataclasses.replace(
            streak, retry_from=max(entry.enqueued_at, streak.webhook_failing_since or now)
        )
        step = next_step(result, state, effective_policy(self.policy, target.retry), now, self._rng)
        await self._outcomes.carry_out(
            step, result, target, entry.task, BacklogHolding(self._pool, entry)
        )
        return step.outcome

    # --- wake-ups and housekeeping --------------------------------------------------

    async def _listen(self) -> Subscription:
        # On the process's one listen connection (dispatcher.store.notifications).
        def notified(channel: str, payload: str) -> None:
            if channel == WEBHOOKS_CHANNEL:
                self._changed.append(payload)
            self._wake.set()

        # Woken on every (re)connect: anything that changed while not listening is seen.
        return await self._notifications.subscribe(CHANNELS, notified, self._wake.set)

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
        try:
            async with self._pool.acquire() as conn, try_advisory_lock(conn, _PURGE_LOCK) as mine:
                if not mine:
                    return
                purged = await attempt_store.purge(conn, self._settings.attempt_retention_days)
                orphans = await backlog.drop_orphans(conn)
            if purged or orphans:
                log.info("scheduler.housekeeping", purged_attempts=purged, orphans=orphans)
        except TRANSIENT_ERRORS as exc:
            log.warning("scheduler.housekeeping_failed", error=str(exc))
