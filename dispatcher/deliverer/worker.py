"""The delivery worker: lanes, the ready queue, the in-flight caps and attempt outcomes.

Deliveries read from Kafka are ``submit``-ted into their webhook's ``Lane``. Lanes that
may send sit in one FIFO ready queue; the dispatch loop takes the first, starts one
request (under the global in-flight semaphore) and puts the lane back at the tail if it
may send more, so a busy webhook gets one turn per round like everybody else.

Pacing per webhook (``Lane.pace``, ``Lane.adapt``): a rate-limited lane whose bucket
is empty waits on its own timer (``next_attempt_at``) before it asks for a global
in-flight slot, so it holds none and sends nothing (no attempt is logged) while it
waits; an unordered lane's in-flight limit is its adaptive window, fed by every answer
and reported to Postgres at most every ``REPORT_WINDOW_EVERY_S`` while it changes.

Each answer goes through the delivery policy (``dispatcher.delivery.policy``) and its
step is carried out by ``outcomes`` (the one executor, shared with the backlog
scheduler): 2xx finishes the delivery; a failure retries the lane's head after a
backoff (timers re-queue the lane); past the in-memory window, on 410 or for a
DISABLED webhook the lane moves to the Postgres backlog, and a give-up is recorded for
replay (both in ``parking``). Finished deliveries are marked done in their partition's
``OffsetTracker``; the deliverer commits what the trackers allow.

The worker does no Kafka I/O; it owns the trackers (``partitions``, an
``OwnedPartitions``) so it can tell a live delivery from one whose partition was
revoked (those are dropped, their offsets never committed here, and the partition's
next owner delivers them again).

Ownership and order: a webhook may have been parked by the partition's previous
owner; ``parked_checks`` creates lanes whose parked state is unknown as ``UNCHECKED``
and asks Postgres once per batch. Adaptive windows are reported by ``window_reports``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import asyncpg
import structlog
from aiokafka import TopicPartition

from dispatcher.deliverer.announcer import Announcer
from dispatcher.deliverer.dispatching import ReadyQueue, Slots
from dispatcher.deliverer.lane import Lane, Pending, Where
from dispatcher.deliverer.outcomes import Outcomes
from dispatcher.deliverer.parked_checks import ParkedChecks
from dispatcher.deliverer.parking import STORE_RETRY_S, LaneHolding, Parking
from dispatcher.deliverer.partitions import OffsetTracker, OwnedPartitions
from dispatcher.deliverer.target_cache import TargetCache
from dispatcher.deliverer.window_reports import WindowReports
from dispatcher.delivery import policy
from dispatcher.delivery.attempt import AttemptResult, WebhookTarget
from dispatcher.delivery.http.sender import Sender
from dispatcher.delivery.policy import Outcome
from dispatcher.delivery.secrets import SecretKeyError
from dispatcher.messages.wire import DeliveryTask
from dispatcher.ops.lane_gauges import LaneCounts, count_lanes
from dispatcher.ops.metrics import DelivererMetrics
from dispatcher.settings import Settings
from dispatcher.store.db import TRANSIENT_ERRORS
from dispatcher.subscription.adaptive_window import classify

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
# Default for ``Worker(park_early_above=...)``: the deliverer passes 5% of its buffer.
PARK_EARLY_ABOVE = 250
# A 2xx slower than this fraction of the delivery timeout counts as overload for the
# adaptive window: the receiver is near the point where requests time out.
SLOW_ANSWER_FRACTION = 0.5
# An idle rate-limited lane is forgotten this long after its bucket is full again.
FORGET_MARGIN_S = 0.01
# A lane with requests in flight that started none for this long is stuck (``stuck_pending``).
STUCK_AFTER_S = 1.0
STUCK_RECOUNT_S = 0.25


class Worker:
    """Runs the lanes of one deliverer process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        targets: TargetCache,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        pause_limit: int | None = None,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        on_attempt: Callable[[AttemptResult], None] | None = None,
        park_early_above: int = PARK_EARLY_ABOVE,
        announcer: Announcer | None = None,
        metrics: DelivererMetrics | None = None,
    ) -> None:
        self.settings = settings
        # A failing lane holding more deliveries than this parks before ``park_after``,
        # so failing endpoints cannot fill the deliverer's buffer (and pause everyone).
        self._park_early_above = park_early_above
        self.policy = policy.RetryPolicy.from_settings(settings)
        self._sender = sender
        self._targets = targets
        # Without an announcer (no producer), the lanes' trouble is only logged.
        announcer = announcer or Announcer(None, targets.get)
        self._outcomes = Outcomes(
            pool, announcer, clock, log_sample=settings.log_sample, metrics=metrics
        )
        self._parking = Parking(
            pool, clock, self._finish, self._settle, announcer, metrics, pause_limit=pause_limit
        )
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_attempt = on_attempt
        self._slow_answer_s = settings.delivery_timeout_s * SLOW_ANSWER_FRACTION
        self._windows = WindowReports(pool, self._start_task)
        self.lanes: dict[str, Lane] = {}
        self._parked_checks = ParkedChecks(pool, self.lanes, self._schedule, self._track)
        # The owned partitions' offsets (the deliverer commits what they allow).
        self.partitions = OwnedPartitions()
        self._ready: ReadyQueue[Lane] = ReadyQueue()
        self._slots = Slots(settings.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Deliveries submitted and not yet finished or dropped (backpressure).
        self.outstanding = 0
        self._stuck = 0
        self._stuck_counted_at = float("-inf")

    # -- intake ---------------------------------------------------------------------

    def submit(self, task: DeliveryTask, partition: TopicPartition, offset: int) -> None:
        """Queue a delivery read at ``offset`` of ``partition``."""
        tracker = self._tracker_for(partition, offset)
        tracker.add(offset)
        lane = self.lanes.get(task.webhook_id)
        if lane is None:
            lane = self.lanes[task.webhook_id] = self._parked_checks.new_lane(
                task.webhook_id, partition
            )
        if not lane.checked:
            self._parked_checks.check_soon(lane)
        lane.push(Pending(task, partition, offset, tracker))
        self.outstanding += 1
        if not self._park_early(lane):
            self._schedule(lane)

    def _park_early(self, lane: Lane) -> bool:
        """Park a failing lane that holds too much, without waiting for ``park_after``."""
        if not (
            lane.failing
            and lane.where is Where.MEMORY
            and lane.in_flight == 0
            and len(lane.pending) > self._park_early_above
        ):
            return False
        assert lane.failing_since is not None
        log.info("lane.parking_early", webhook_id=lane.webhook_id, deliveries=len(lane.pending))
        failing_since, failures, next_attempt_at = (
            lane.failing_since,
            lane.failures,
            lane.next_attempt_at,
        )
        entries = self._parking.begin(lane, None)
        if entries is not None:
            self._start_task(
                self._parking.store(
                    lane, entries, entries[0].attempts, failing_since, failures, next_attempt_at
                )
            )
        return True

    def skip(self, partition: TopicPartition, offset: int) -> None:
        """Record an offset that needs no delivery (an invalid task) as finished."""
        tracker = self._tracker_for(partition, offset)
        tracker.add(offset)
        tracker.done(offset)

    def _tracker_for(self, partition: TopicPartition, offset: int) -> OffsetTracker:
        tracker = self.partitions.tracker(partition)
        if tracker.last is not None and offset <= tracker.last:
            # The partition was re-read from its committed offset (e.g. lost and got back
            # between two fetches): start over; the earlier copies are duplicates now.
            log.warning("worker.partition_rewound", partition=partition.partition, offset=offset)
            self.revoke([partition])
            self.partitions.forget([partition])
            tracker = self.partitions.tracker(partition)
        return tracker

    def webhook_changed(self, webhook_id: str) -> None:
        """A webhook's row changed: give its lane a fresh turn (e.g. re-enabled)."""
        lane = self.lanes.get(webhook_id)
        if lane is not None:
            self._schedule(lane)

    # -- partitions -----------------------------------------------------------------

    def revoke(self, partitions: Iterable[TopicPartition]) -> int:
        """Stop work on ``partitions``: drop their pending deliveries; returns how many."""
        revoked = set(partitions)
        self._parked_checks.revoked(revoked)
        dropped = 0
        for lane in list(self.lanes.values()):
            dropped += len(lane.drop(lambda entry: entry.partition in revoked))
            if lane.partition in revoked:
                # Kept for an in-flight request or its backoff state; if the partition
                # comes back, another owner may have parked the webhook meanwhile.
                lane.revoked()
            self._forget_if_idle(lane)
        self.outstanding -= dropped
        return dropped

    def stuck_pending(self) -> int:
        """Deliveries queued in lanes that have requests in flight but started none for
        ``STUCK_AFTER_S`` or more (an ordered lane's one request hangs; an unordered
        lane's whole window does).

        Recounted at most every ``STUCK_RECOUNT_S`` (a scan of the lanes): the
        deliverer's backpressure leaves them out, so endpoints that hang until the
        delivery timeout cannot fill the shared buffer and stall everybody else.
        """
        now = self._clock()
        if now - self._stuck_counted_at >= STUCK_RECOUNT_S or now < self._stuck_counted_at:
            self._stuck_counted_at = now
            self._stuck = sum(
                len(lane.pending)
                for lane in self.lanes.values()
                if lane.in_flight and now - lane.busy_since >= STUCK_AFTER_S
            )
        return self._stuck

    def lane_counts(self) -> LaneCounts:
        """This worker's lanes by state now (the ``lanes`` gauge samples it)."""
        return count_lanes(self.lanes.values(), self._clock())

    async def run(self) -> None:
        """Dispatch ready lanes until cancelled."""
        try:
            while True:
                lane = await self._ready.get()
                try:
                    await self._dispatch(lane)
                except (*TRANSIENT_ERRORS, SecretKeyError) as exc:
                    # Loading the target failed (Postgres away, or HOOKLANE_SECRET_KEY
                    # cannot open its secret): retry the lane shortly; the others go on.
                    log.error("lane.target_unavailable", webhook_id=lane.webhook_id, error=str(exc))
                    lane.wait_until(self._clock() + STORE_RETRY_S)
                    self._schedule(lane)
        finally:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self._windows.cancel()

    async def close(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for in-flight requests, then cancel the rest."""
        if self._tasks:
            _, still_running = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)

    def _schedule(self, lane: Lane) -> None:
        if not lane.pending or lane.storing or not lane.checked:
            return
        if lane.parked:
            lane.start_storing()  # now, not when the task starts: one writer per lane
            self._start_task(self._parking.spill(lane))
            return
        if lane in self._ready or lane.in_flight >= lane.capacity():
            return  # a finishing request schedules the lane again
        now = self._clock()
        if lane.next_attempt_at > now:
            self._wake_at(lane, lane.next_attempt_at)
            return
        self._ready.put(lane)

    def _wake_at(self, lane: Lane, when: float) -> None:
        if lane.webhook_id in self._timers:
            self._timers[lane.webhook_id].cancel()
        delay = max(0.0, when - self._clock())

        def wake() -> None:
            self._timers.pop(lane.webhook_id, None)
            self._schedule(lane)

        self._timers[lane.webhook_id] = asyncio.get_running_loop().call_later(delay, wake)

    async def _dispatch(self, lane: Lane) -> None:
        if not lane.ready(self._clock()):
            return
        target = await self._targets.get(lane.webhook_id)
        if target is None:
            entries = lane.drain()
            log.warning("webhook.missing", webhook_id=lane.webhook_id, deliveries=len(entries))
            for entry in entries:
                self._finish(entry)
            self._forget_if_idle(lane)
            return
        if not target.enabled:
            # Kept in the backlog: re-enabling the webhook resumes from there, in order.
            now = self._clock()
            parking = self._parking.begin(lane, None)
            if parking is not None:
                self._start_task(self._parking.store(lane, parking, 0, now, 0, now))
            return
        lane.adapt(
            None
            if target.ordering == "ordered"
            else min(target.max_in_flight, self.settings.max_in_flight_per_webhook)
        )
        now = self._clock()
        wait = lane.pace(target.rate_limit, now)
        if wait > 0:
            # Its own timer, no global slot held: other lanes go on meanwhile.
            lane.wait_until(now + wait)
            self._schedule(lane)
            return
        if not self._slots.take():
            await self._slots.acquire()
        if not lane.ready(self._clock()):  # revoked or changed while waiting for a slot
            self._slots.release()
            return
        entry = lane.take(self._clock())
        self.partitions.request_started(entry.partition)
        self._start_task(self._deliver(lane, target, entry))
        self._schedule(lane)  # back of the queue: round-robin

    def _start_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._track(asyncio.create_task(coroutine))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- outcomes -------------------------------------------------------------------

    async def _deliver(self, lane: Lane, target: WebhookTarget, entry: Pending) -> None:
        started_at = self._clock()
        try:
            try:
                # An exception inside Hooklane comes back as a failed attempt (outcomes).
                result = await self._outcomes.attempt(
                    self._sender, target, entry.task, entry.attempts + 1
                )
            except asyncio.CancelledError:
                lane.finished()  # shutdown: not finished, so not committed
                raise
            finally:
                self._slots.release()
            entry.attempts += 1
            if self._on_attempt is not None:
                self._on_attempt(result)
            self._adapt_window(lane, result, started_at)
            await self._handle(lane, target, entry, result)
        finally:
            await self.partitions.request_ended(entry.partition)

    def _adapt_window(self, lane: Lane, result: AttemptResult, started_at: float) -> None:
        if lane.window is None:
            return
        signal = classify(
            result.status_code,
            result.duration_ms / 1000,
            result.error_class == "DeliveryTimeout",
            self._slow_answer_s,
        )
        lane.observe(signal, started_at, self._clock())
        self._windows.report_soon(lane.webhook_id, lane.limit)

    def _live(self, entry: Pending) -> bool:
        return self.partitions.is_current(entry.partition, entry.tracker)

    async def _handle(
        self, lane: Lane, target: WebhookTarget, entry: Pending, result: AttemptResult
    ) -> None:
        now = self._clock()
        retry_policy = policy.effective_policy(self.policy, target.retry)
        step = policy.next_step(result, lane.streak(), retry_policy, now, self._rng)
        if step.outcome is not Outcome.DELIVERED and not self._live(entry):
            lane.finished()  # revoked meanwhile: the next owner delivers it again
            self.outstanding -= 1
        elif step.outcome is not Outcome.DELIVERED and (lane.parked or lane.storing):
            lane.finished()  # an unordered sibling parked the lane: follow it to the backlog
            lane.requeue(entry)
        else:
            holding = LaneHolding(self._parking, lane, entry, self._retry_at)
            await self._outcomes.carry_out(step, result, target, entry.task, holding)
        self._forget_if_idle(lane)
        self._schedule(lane)

    def _retry_at(self, lane: Lane, when: float) -> None:
        """A failed head is retried at ``when``, unless the lane holds too much to wait."""
        if not self._park_early(lane):
            self._wake_at(lane, when)

    def _settle(self, lane: Lane) -> None:
        """After a backlog write: forget the lane if idle, else give it its next turn."""
        self._forget_if_idle(lane)
        self._schedule(lane)

    def _finish(self, entry: Pending) -> None:
        entry.tracker.done(entry.offset)
        self.outstanding -= 1

    def _forget_later(self, lane: Lane, delay: float) -> None:
        if lane.webhook_id in self._timers:
            self._timers[lane.webhook_id].cancel()

        def forget() -> None:
            self._timers.pop(lane.webhook_id, None)
            self._forget_if_idle(lane)

        self._timers[lane.webhook_id] = asyncio.get_running_loop().call_later(delay, forget)

    def _forget_if_idle(self, lane: Lane) -> None:
        if not (lane.idle and not lane.failing and self.lanes.get(lane.webhook_id) is lane):
            return
        now = self._clock()
        if lane.pacing(now):
            # Its bucket still remembers the last request: a new lane would not. Forget
            # it once the bucket is full again (by then a busy lane ignores the timer).
            assert lane.bucket is not None
            self._forget_later(lane, lane.bucket.full_at() - now + FORGET_MARGIN_S)
            return
        self.lanes.pop(lane.webhook_id, None)
        self._parked_checks.forgotten(lane)
        timer = self._timers.pop(lane.webhook_id, None)
        if timer is not None:
            timer.cancel()
