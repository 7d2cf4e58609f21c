"""Per-endpoint rate limits: a token bucket, pure, with the clock passed in.

A webhook's ``rate_limit`` is ``{"per_second": n}`` or ``{"per_minute": n}``. The
bucket refills at that rate and holds ``burst`` tokens (default 1: requests are spaced
evenly, so any window of T seconds sees at most ``1 + rate * T`` of them; a receiver
that asked for 5/s never gets a burst of 5 at once after an idle minute).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

UNITS = {"per_second": 1.0, "per_minute": 60.0}
# Refill arithmetic is floating point: a token this close to whole counts as whole
# (otherwise a caller could be told to wait 1e-17 s, forever).
EPSILON = 1e-9


@dataclass(slots=True)
class TokenBucket:
    """``acquire(now)`` answers 0 and takes a token, or the seconds until one is there."""

    rate: float  # tokens per second
    burst: float = 1.0
    tokens: float | None = None  # None: full
    updated_at: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")

    def _refill(self, now: float) -> float:
        tokens = self.burst if self.tokens is None else self.tokens
        if self.updated_at is not None and now > self.updated_at:  # a clock going back adds none
            tokens = min(self.burst, tokens + (now - self.updated_at) * self.rate)
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now
        self.tokens = tokens
        return tokens

    def acquire(self, now: float) -> float:
        """Take one token at ``now`` (returns 0.0), or return how long until one is due.

        Waiting takes nothing: the caller asks again after the wait.
        """
        tokens = self._refill(now)
        if tokens >= 1.0 - EPSILON:
            self.tokens = max(0.0, tokens - 1.0)
            return 0.0
        return (1.0 - tokens) / self.rate

    def full_at(self) -> float:
        """When the bucket holds ``burst`` tokens again (forgetting it then loses nothing)."""
        if self.tokens is None or self.updated_at is None:
            return float("-inf")
        return self.updated_at + (self.burst - self.tokens) / self.rate


def rate_of(limit: Mapping[str, int] | None) -> float | None:
    """Tokens per second of a webhook's ``rate_limit`` object (None: unlimited)."""
    if not limit:
        return None
    ((unit, count),) = limit.items()
    return count / UNITS[unit]


def rebuilt(bucket: TokenBucket | None, rate: float | None) -> TokenBucket | None:
    """The bucket for ``rate``: ``bucket`` itself while its rate is unchanged, else a new one.

    The lanes and the backlog scheduler's drain both pace with this, so a webhook's
    limit means the same wherever its deliveries come from.
    """
    if rate is None:
        return None
    if bucket is not None and bucket.rate == rate:
        return bucket
    return TokenBucket(rate=rate)
