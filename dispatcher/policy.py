"""The delivery policy: what an attempt's outcome means and when to try again.

Pure functions only: the clock (``now``, unix seconds) and randomness (``rng``) are
passed in, so every rule here is table-tested without I/O.

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

import enum
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from dispatcher.attempt import AttemptResult
from dispatcher.settings import Settings

# Full jitter never goes below this fraction of the scheduled delay: never a 0 s retry.
JITTER_FLOOR = 0.1
RETRY_AFTER_STATUSES = frozenset({429, 503})

Action = Literal["done", "retry", "park", "give_up", "disable"]


class Random(Protocol):
    """The slice of ``random.Random`` the policy uses (tests pass a seeded one)."""

    def uniform(self, a: float, b: float) -> float: ...


class Verdict(enum.Enum):
    """What one attempt's outcome means."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DISABLE = "disable"
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True)
class Classification:
    """A verdict, plus the receiver's requested wait (``Retry-After``) if it gave one."""

    verdict: Verdict
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with the delivery next; ``next_attempt_at`` for retry and park."""

    action: Action
    next_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
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


def classify(result: AttemptResult, retry_after_max: float, now: float) -> Classification:
    """What ``result`` means: delivered, retry (maybe after a wait), disable or give up."""
    if result.success:
        return Classification(Verdict.DELIVERED)
    if not result.retriable:
        return Classification(Verdict.GIVE_UP)
    if result.status_code == 410:
        return Classification(Verdict.DISABLE)
    retry_after = None
    if result.status_code in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(result.retry_after, now, retry_after_max)
    return Classification(Verdict.RETRY, retry_after)


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


def decide(
    policy: RetryPolicy,
    classification: Classification,
    failing_since: float,
    failures: int,
    now: float,
    rng: Random,
) -> Decision:
    """The next step for a delivery after an attempt classified as ``classification``.

    ``failing_since`` is when this delivery (or its lane) started failing and
    ``failures`` counts consecutive failures including this one. A retry whose wait
    would take the failure past ``park_after`` parks instead; the parked retry is on
    the long schedule but never later than the end of the retry window, so the last
    attempt happens at the window's edge.
    """
    verdict = classification.verdict
    if verdict is Verdict.DELIVERED:
        return Decision("done")
    if verdict is Verdict.DISABLE:
        return Decision("disable")
    if verdict is Verdict.GIVE_UP:
        return Decision("give_up")
    elapsed = now - failing_since
    if elapsed >= policy.retry_window:
        return Decision("give_up")
    retry_after = classification.retry_after_s or 0.0
    wait = max(backoff_delay(failures, policy.schedule, rng), retry_after)
    if elapsed + wait > policy.park_after:
        parked_wait = min(parked_delay(policy, failures, rng), policy.retry_window - elapsed)
        return Decision("park", now + max(parked_wait, retry_after))
    return Decision("retry", now + wait)


def should_auto_disable(policy: RetryPolicy, failing_since: float | None, now: float) -> bool:
    """True once a webhook has failed continuously for ``auto_disable_after``."""
    return failing_since is not None and now - failing_since >= policy.auto_disable_after


def default_rng() -> Random:
    """A fresh, OS-seeded random source for production use."""
    return random.Random()
