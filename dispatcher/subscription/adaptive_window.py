"""Adaptive concurrency for unordered webhooks: an AIMD window, pure and clock-free.

``max_in_flight`` is the ceiling; the window says how many requests may be in flight
now. Like TCP congestion control:

- slow start: each fast 2xx adds 1 (the window doubles per round of requests) until
  the first sign of overload;
- then additive increase: each fast 2xx adds ``increase / window`` (+``increase`` per
  round; below 1 so that probing past a receiver's capacity, which costs a 429/503,
  is rare: at a capacity of 4 about one answer in 20 is an overload at 0.5, one in 40
  at the 0.25 the deliverer uses, ``lane.WINDOW_INCREASE``);
- multiplicative decrease on overload (429, 503, a timeout, or a 2xx slower than
  ``latency_threshold``): the window is multiplied by ``decrease``, at most once per
  round: answers to requests started before the last decrease are about the old
  window and do not shrink it again.

Other failures (500, connection refused) say nothing about load and change nothing.
The window stays within [1, ceiling].
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Signal(enum.Enum):
    """What one answer says about the receiver's load."""

    FAST = "fast"  # 2xx within the latency threshold
    OVERLOAD = "overload"  # 429, 503, timeout, or a 2xx over the threshold
    NEUTRAL = "neutral"  # any other failure


OVERLOAD_STATUSES = frozenset({429, 503})


def classify(
    status: int | None, latency_s: float, timed_out: bool, latency_threshold: float
) -> Signal:
    """The signal of an attempt's outcome."""
    if timed_out or status in OVERLOAD_STATUSES:
        return Signal.OVERLOAD
    if status is not None and 200 <= status < 300:
        return Signal.FAST if latency_s <= latency_threshold else Signal.OVERLOAD
    return Signal.NEUTRAL


@dataclass(slots=True)
class AdaptiveWindow:
    """An AIMD window in [1, ceiling] (see the module docstring)."""

    ceiling: int
    window: float = 1.0
    decrease: float = 0.5
    increase: float = 0.5
    slow_start: bool = True
    # When the window last shrank (in the caller's clock); None: never.
    decreased_at: float | None = None

    def __post_init__(self) -> None:
        if self.ceiling < 1 or not 0 < self.decrease < 1:
            raise ValueError("an adaptive window needs ceiling >= 1 and 0 < decrease < 1")
        self.window = min(max(self.window, 1.0), self.ceiling)

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return max(1, min(self.ceiling, math.floor(self.window)))

    def observe(self, signal: Signal, started_at: float, now: float) -> int:
        """Fold in one answer to a request started at ``started_at``; returns ``limit``."""
        if signal is Signal.FAST:
            step = 1.0 if self.slow_start else self.increase / self.window
            self.window = min(float(self.ceiling), self.window + step)
        elif signal is Signal.OVERLOAD:
            if self.decreased_at is None or started_at >= self.decreased_at:
                self.window = max(1.0, self.window * self.decrease)
                self.decreased_at = now
            self.slow_start = False
        return self.limit
