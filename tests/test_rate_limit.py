"""The per-endpoint token bucket: spacing, refill, clock going back, the limit object."""

from __future__ import annotations

import itertools

import pytest

from dispatcher.subscription.rate_limit import TokenBucket, rate_of, rebuilt


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
    bucket = rebuilt(None, rate_of(limit))
    assert (bucket.rate if bucket else None) == rate


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5)])
def test_invalid_buckets_are_refused(rate: float, burst: float) -> None:
    """A rate of 0 or a burst below one token cannot be built."""
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=rate, burst=burst)


@pytest.mark.parametrize(
    ("calls", "full_at"),
    [
        ([], float("-inf")),  # never used: full
        ([10.0], 10.2),  # one token taken at 10 s is back at 10.2 s
        ([10.0, 10.1], 10.2),  # a wait took nothing: still 10.2 s
        ([10.0, 10.5], 10.7),  # refilled at 10.2, taken again at 10.5
    ],
)
def test_full_at_says_when_forgetting_the_bucket_loses_nothing(
    calls: list[float], full_at: float
) -> None:
    """``full_at`` is when the bucket holds its burst again after the calls made."""
    bucket = TokenBucket(rate=5.0)
    for now in calls:
        bucket.acquire(now)
    assert bucket.full_at() == pytest.approx(full_at)


@pytest.mark.parametrize(
    ("limit", "rate"),
    [({"per_second": 5}, 5.0), ({"per_minute": 90}, 1.5), (None, None), ({}, None)],
)
def test_rate_of_a_rate_limit_object(limit: dict[str, int] | None, rate: float | None) -> None:
    """The per-second rate of a ``rate_limit`` object; none is unlimited."""
    assert rate_of(limit) == rate


def test_rebuilt_keeps_the_bucket_while_the_rate_is_unchanged() -> None:
    """Same rate: the same bucket (its state kept); new rate: a new one; no rate: none."""
    bucket = TokenBucket(rate=5.0)
    bucket.acquire(10.0)
    assert rebuilt(bucket, 5.0) is bucket
    changed = rebuilt(bucket, 2.0)
    assert changed is not None and changed is not bucket and changed.rate == 2.0
    assert changed.acquire(10.0) == 0.0  # a new limit starts with its burst
    assert rebuilt(bucket, None) is None
    assert rebuilt(None, 1.0) == TokenBucket(rate=1.0)
