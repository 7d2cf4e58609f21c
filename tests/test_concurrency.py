"""The AIMD window of unordered webhooks: signals, slow start, decrease once per round."""

from __future__ import annotations

import pytest

from dispatcher.subscription.adaptive_window import AdaptiveWindow, Signal, classify


@pytest.mark.parametrize(
    ("status", "latency", "timed_out", "signal"),
    [
        (200, 0.1, False, Signal.FAST),
        (204, 1.0, False, Signal.FAST),  # at the threshold is still fast
        (200, 1.5, False, Signal.OVERLOAD),  # slow 2xx
        (429, 0.1, False, Signal.OVERLOAD),
        (503, 0.1, False, Signal.OVERLOAD),
        (None, 10.0, True, Signal.OVERLOAD),
        (500, 0.1, False, Signal.NEUTRAL),
        (None, 0.0, False, Signal.NEUTRAL),  # connection refused
        (404, 0.1, False, Signal.NEUTRAL),
    ],
)
def test_classify(status: int | None, latency: float, timed_out: bool, signal: Signal) -> None:
    """Each answer maps to the signal it gives about the receiver's load."""
    assert classify(status, latency, timed_out, latency_threshold=1.0) is signal


def test_slow_start_grows_to_the_ceiling_and_stays_there() -> None:
    """Fast answers fill the window up to the ceiling and never beyond."""
    window = AdaptiveWindow(ceiling=16)
    limits = [window.observe(Signal.FAST, started_at=t, now=t) for t in range(20)]
    assert limits[:3] == [2, 3, 4]
    assert limits[-1] == 16
    assert max(limits) == 16


def test_overload_halves_once_per_round_then_grows_additively() -> None:
    """A burst of overload answers from one round halves once; growth is then ~+1 per two rounds."""
    window = AdaptiveWindow(ceiling=32, window=16.0)
    assert window.observe(Signal.OVERLOAD, started_at=1.0, now=2.0) == 8
    # answers to requests started before the decrease are about the old window
    assert window.observe(Signal.OVERLOAD, started_at=1.5, now=2.1) == 8
    assert window.observe(Signal.OVERLOAD, started_at=2.5, now=3.0) == 4
    limits = [window.observe(Signal.FAST, started_at=4.0, now=4.0) for _ in range(8)]
    assert limits[-1] == 4  # two rounds of four answers at window 4: about +1
    assert window.observe(Signal.FAST, started_at=4.0, now=4.0) == 5


def test_window_never_falls_below_one_and_neutral_changes_nothing() -> None:
    """Repeated overload bottoms out at one request; other failures leave the window alone."""
    window = AdaptiveWindow(ceiling=8, window=8.0)
    for t in range(10):
        window.observe(Signal.OVERLOAD, started_at=float(t), now=float(t))
    assert window.limit == 1
    assert window.observe(Signal.NEUTRAL, started_at=20.0, now=20.0) == 1


def test_converges_near_the_receivers_capacity() -> None:
    """Against a receiver that rejects above 4 concurrent requests, the window hovers around 4."""
    window = AdaptiveWindow(ceiling=16)
    limits, rejected, total = [], 0, 0
    for round_ in range(200):
        limit = window.limit
        now = float(round_)
        for slot in range(limit):  # one round: `limit` concurrent requests
            total += 1
            overloaded = slot >= 4  # the receiver answers 503 above 4 concurrent
            rejected += overloaded
            window.observe(Signal.OVERLOAD if overloaded else Signal.FAST, now, now + 0.5)
        limits.append(window.limit)
    tail = limits[100:]
    assert min(tail) >= 2 and max(tail) <= 5
    assert sum(tail) / len(tail) >= 3
    assert rejected / total < 0.05


@pytest.mark.parametrize(("ceiling", "decrease"), [(0, 0.5), (4, 1.0), (4, 0.0)])
def test_invalid_windows_are_refused(ceiling: int, decrease: float) -> None:
    """A ceiling below one or a decrease outside (0, 1) cannot be built."""
    with pytest.raises(ValueError, match="ceiling"):
        AdaptiveWindow(ceiling=ceiling, decrease=decrease)
