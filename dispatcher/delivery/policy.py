"""The delivery policy: what an attempt's outcome means and when to try again.

Pure functions only: the clock (``now``, unix seconds) and randomness (``rng``) are
passed in, so every rule here is table-tested without I/O. ``next_step`` is the one
place that turns an attempt's result into an ``Outcome``: the in-memory lanes and the
backlog scheduler both apply it, and only carry out what it says.

Schedule semantics
------------------
``HOOKLANE_RETRY_SCHEDULE`` is one list of delays, indexed by the number of
consecutive failures (the n-th failure waits about ``schedule[n-1]``; past the end the
last delay repeats). It splits in two:

- **short retries**: the longest prefix whose delays add up to at most
  ``HOOKLANE_PARK_AFTER`` (default 60 s). These happen in memory, in the webhook's lane.
  With the default ``1s,2s,4s,8s,15s,30s,5m,30m,2h,5h,10h`` that is ``1s … 30s``.
- **the long schedule**: the rest (``5m, 30m, 2h, 5h, 10h``, repeating the last). Once
  a lane has been failing longer than ``park_after`` it is parked in Postgres and the
  backlog scheduler retries its head on this schedule.

Delays use full jitter (uniform between a small floor and the scheduled delay) so
failing endpoints are not retried in lock-step. A delivery keeps being retried until it
has been failing for ``HOOKLANE_RETRY_WINDOW`` (default 3 days); it is then given up
(recorded as failed, kept for replay). A webhook that has failed continuously for
``HOOKLANE_AUTO_DISABLE_AFTER`` (default 5 days) is disabled. ``429``/``503`` with a
``Retry-After`` header wait at least that long (bounded by ``HOOKLANE_RETRY_AFTER_MAX``);
``410 Gone`` disables the webhook at once; a blocked destination is never retried.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import random
from email.utils import parsedate_to_datetime
from typing import Protocol

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.settings import Settings
from dispatcher.subscription.retry_override import MAX_STEPS, RetryOverride
from dispatcher.values import immutable

# Full jitter never goes below this fraction of the scheduled delay: never a 0 s retry.
JITTER_FLOOR = 0.1
RETRY_AFTER_STATUSES = frozenset({429, 503})


class Random(Protocol):
    """The slice of ``random.Random`` the policy uses (tests pass a seeded one)."""

    def uniform(self, a: float, b: float) -> float: ...


class Outcome(enum.Enum):
    """What becomes of a delivery after an attempt: the one vocabulary of the engine."""

    DELIVERED = "delivered"
    RETRY = "retry"  # again, in memory, at ``next_attempt_at``
    PARK = "park"  # again, from the Postgres backlog, at ``next_attempt_at``
    GIVE_UP = "give_up"  # recorded as failed (kept for replay); the next one goes on
    DISABLE = "disable"  # the webhook is disabled; its deliveries wait in the backlog


@immutable
class Streak:
    """The failure streak an attempt was made under (before its result is known).

    The one streak type of the engine: a lane builds it from its own counters
    (``Lane.streak``), the backlog scheduler from the parked row and its drain.
    """

    failures: int = 0  # consecutive failures so far
    failing_since: float | None = None  # when the streak began; None while healthy
    # When this delivery's retry window opened (default: ``failing_since``).
    retry_from: float | None = None
    # When the webhook's continuous failure began, for auto-disable (None: unknown).
    webhook_failing_since: float | None = None


@immutable
class Step:
    """The next step for a delivery, and the lane's streak after the attempt."""

    outcome: Outcome
    next_attempt_at: float | None = None  # RETRY and PARK
    reason: str | None = None  # GIVE_UP and DISABLE: what the record says
    failures: int = 0
    failing_since: float | None = None


# A 2xx (the common case): one frozen value instead of a new one per delivery.
DELIVERED = Step(Outcome.DELIVERED)


@immutable
class RetryPolicy:
    """The retry schedule and windows (see the module docstring)."""

    schedule: tuple[float, ...]
    park_after: float
    retry_window: float
    auto_disable_after: float
    retry_after_max: float

    def __post_init__(self) -> None:
        if not self.schedule or any(delay <= 0 for delay in self.schedule):
            raise ValueError("the retry schedule needs at least one positive delay")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy configured by ``HOOKLANE_*`` settings."""
        return cls(
            schedule=settings.retry_schedule,
            park_after=settings.park_after,
            retry_window=settings.retry_window,
            auto_disable_after=settings.auto_disable_after,
            retry_after_max=settings.retry_after_max,
        )

    @property
    def short_schedule(self) -> tuple[float, ...]:
        """The in-memory retries: the longest prefix adding up to at most ``park_after``."""
        total = 0.0
        for index, delay in enumerate(self.schedule):
            total += delay
            if total > self.park_after:
                return self.schedule[:index]
        return self.schedule

    @property
    def long_schedule(self) -> tuple[float, ...]:
        """The parked retries: the rest of the schedule (its last delay when none is left)."""
        rest = self.schedule[len(self.short_schedule) :]
        return rest or self.schedule[-1:]


@functools.lru_cache(maxsize=1024)
def effective_policy(base: RetryPolicy, override: RetryOverride) -> RetryPolicy:
    """The policy of a webhook with a ``retry`` override, bounded by the operator's ``base``.

    The one place the lanes and the backlog scheduler get a webhook's policy from. No
    delay exceeds the longest of ``base.schedule`` and the window never exceeds
    ``base.retry_window`` (the API checked both when the override was saved; this holds
    them even after the operator tightened the settings). Cached: policies are values.
    """
    if override.schedule is None and override.window is None:
        return base
    longest = max(base.schedule)
    schedule = base.schedule
    if override.schedule:
        schedule = tuple(min(delay, longest) for delay in override.schedule[:MAX_STEPS])
    window = base.retry_window if override.window is None else override.window
    return dataclasses.replace(base, schedule=schedule, retry_window=min(window, base.retry_window))


def parse_retry_after(value: str | None, now: float, maximum: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date).

    Relative to ``now``; never negative; at most ``maximum``; None when absent or
    unparseable (then the header is ignored).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            # RFC 9110 HTTP-dates are GMT; a date without a zone is not one.
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), maximum)


def backoff_delay(failures: int, schedule: tuple[float, ...], rng: Random) -> float:
    """The wait after the ``failures``-th consecutive failure, with full jitter.

    Uniform between ``JITTER_FLOOR * cap`` and ``cap = schedule[failures - 1]`` (the last
    delay repeats past the end; ``failures`` below 1 counts as 1).
    """
    if not schedule:
        raise ValueError("the schedule is empty")
    cap = schedule[min(max(failures, 1), len(schedule)) - 1]
    return rng.uniform(cap * JITTER_FLOOR, cap)


def parked_delay(policy: RetryPolicy, failures: int, rng: Random) -> float:
    """The wait between parked retries: the long schedule, indexed past the short one."""
    return backoff_delay(failures - len(policy.short_schedule), policy.long_schedule, rng)


def should_auto_disable(policy: RetryPolicy, failing_since: float | None, now: float) -> bool:
    """True once a webhook has failed continuously for ``auto_disable_after``."""
    return failing_since is not None and now - failing_since >= policy.auto_disable_after


def next_step(
    result: AttemptResult, state: Streak, policy: RetryPolicy, now: float, rng: Random
) -> Step:
    """What to do after ``result``: the one decision the lanes and the scheduler apply.

    In order: a 2xx is delivered; a non-retriable result (a blocked destination, an
    internal error) is given up; ``410 Gone`` disables the webhook; a delivery
    failing for the whole retry window (from ``retry_from``) is given up; a webhook
    failing continuously for ``auto_disable_after`` is disabled. Otherwise it is
    retried after the backoff (at least the receiver's ``Retry-After`` on 429/503): in
    memory while the failure stays within ``park_after``, else parked on the long
    schedule, never later than the end of the retry window, so the last attempt
    happens at the window's edge.
    """
    if result.success:
        return DELIVERED
    failures = state.failures + 1
    failing_since = state.failing_since if state.failing_since is not None else now

    def step(outcome: Outcome, at: float | None = None, reason: str | None = None) -> Step:
        return Step(outcome, at, reason, failures, failing_since)

    last_error = result.error or "gave up"
    if not result.retriable:
        return step(Outcome.GIVE_UP, reason=last_error)
    if result.status_code == 410:
        return step(Outcome.DISABLE, reason="the endpoint answered 410 Gone")
    retry_from = state.retry_from if state.retry_from is not None else failing_since
    elapsed = now - retry_from
    if elapsed >= policy.retry_window:
        return step(Outcome.GIVE_UP, reason=f"retry window exceeded; last error: {last_error}")
    if should_auto_disable(policy, state.webhook_failing_since, now):
        days = policy.auto_disable_after / 86400
        return step(Outcome.DISABLE, reason=f"failing continuously for {days:g} days")
    retry_after = 0.0
    if result.status_code in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(result.retry_after, now, policy.retry_after_max) or 0.0
    wait = max(backoff_delay(failures, policy.schedule, rng), retry_after)
    if elapsed + wait > policy.park_after:
        parked_wait = min(parked_delay(policy, failures, rng), policy.retry_window - elapsed)
        return step(Outcome.PARK, now + max(parked_wait, retry_after))
    return step(Outcome.RETRY, now + wait)


def default_rng() -> Random:
    """A fresh, OS-seeded random source for production use."""
    return random.Random()
