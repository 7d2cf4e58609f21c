"""The per-endpoint token bucket: spacing, refill, clock going back, the limit object."""

from __future__ import annotations

import itertools

import pytest

from dispatcher.rate_limit import TokenBucket, bucket_for


@pytest.mark.parametrize(
    ("rate", "burst", "calls", "waits"),
    [
        # 5/s, no burst: the second request at the same instant waits 0.2 s
        (5.0, 1.0, [0.0, 0.0], [0.0, 0.2]),
        (5.0, 1.0, [0.0, 0.1, 0.2, 0.4], [0.0, 0.1, 0.0, 0.0]),
        # a burst of 3 is spent, then spacing applies
        (1.0, 3.0, [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]),
        # an idle minute refills at most `burst` tokens
        (1.0, 2.0, [0.0, 0.0, 60.0, 60.0, 60.0], [0.0, 0.0, 0.0, 0.0, 1.0]),
        # 60 per minute is one per second
        (1.0, 1.0, [10.0, 10.5, 11.0], [0.0, 0.5, 0.0]),
        # a clock going back adds no tokens
        (1.0, 1.0, [10.0, 5.0], [0.0, 1.0]),
    ],
)
def test_acquire_waits(rate: float, burst: float, calls: list[float], waits: list[float]) -> None:
    """``acquire(now)`` takes a token or answers the wait until one is due."""
    bucket = TokenBucket(rate=rate, burst=burst)
    assert [pytest.approx(bucket.acquire(now)) for now in calls] == waits


def test_waiting_then_acquiring_paces_at_the_rate() -> None:
    """A caller that sleeps the answered wait sends exactly `rate` per second."""
    bucket = TokenBucket(rate=5.0)
    now, sent = 0.0, []
    while now < 9.9:  # 10 s, less float drift
        wait = bucket.acquire(now)
        if wait == 0.0:
            sent.append(now)
        else:
            now += wait
    assert len(sent) == 50
    assert all(b - a == pytest.approx(0.2) for a, b in itertools.pairwise(sent))


@pytest.mark.parametrize(
    ("limit", "rate"),
    [({"per_second": 5}, 5.0), ({"per_minute": 30}, 0.5), (None, None), ({}, None)],
)
def test_bucket_for_a_rate_limit_object(limit: dict[str, int] | None, rate: float | None) -> None:
    """``{"per_second": n}`` and ``{"per_minute": n}`` become buckets; none is unlimited."""
    bucket = bucket_for(limit)
    assert (bucket.rate if bucket else None) == rate


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5)])
def test_invalid_buckets_are_refused(rate: float, burst: float) -> None:
    """A rate of 0 or a burst below one token cannot be built."""
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=rate, burst=burst)
