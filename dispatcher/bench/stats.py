"""Pure statistics for benchmark figures: percentiles, rates and ratios.

No I/O and no clock: every function takes the samples it summarises, so the unit
tests pin the arithmetic down exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None for no samples.

    Same definition as numpy's default (``method="linear"``), so figures can be
    cross-checked with any spreadsheet.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    if not samples:
        return None
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = math.ceil(position)
    if lower == upper:
        return float(ordered[lower])
    weight = position - lower
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def summarize(samples: Sequence[float], scale: float = 1.0) -> dict[str, float | None]:
    """p50/p90/p99/max (and the count) of ``samples``, each multiplied by ``scale``."""
    ordered = sorted(samples)

    def scaled(value: float | None) -> float | None:
        return None if value is None else round(value * scale, 3)

    return {
        "count": float(len(ordered)),
        "p50": scaled(percentile(ordered, 50)),
        "p90": scaled(percentile(ordered, 90)),
        "p99": scaled(percentile(ordered, 99)),
        "max": scaled(float(ordered[-1]) if ordered else None),
    }


def rate(count: float, seconds: float) -> float | None:
    """``count`` per second, or None when no time elapsed (nothing to divide by)."""
    if seconds <= 0:
        return None
    return count / seconds


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference`` rounded to 3 places; None when either is missing or zero."""
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 3)


def per_item_us(cpu_seconds: float, items: int) -> float | None:
    """CPU microseconds per item, or None when there were no items."""
    if items <= 0:
        return None
    return round(cpu_seconds * 1e6 / items, 1)


def order_violations(sequences: Sequence[int]) -> int:
    """How many times a sequence number arrives below one already seen (duplicates ok).

    At-least-once delivery may repeat a message, so an equal number is not a
    violation; a smaller one after a larger one is.
    """
    violations = 0
    highest: int | None = None
    for seq in sequences:
        if highest is not None and seq < highest:
            violations += 1
        else:
            highest = seq
    return violations


def since_stage(
    stage: Sequence[tuple[float, float]],
    deliveries: Sequence[tuple[float, float]],
    tolerance: float = 5e-6,
) -> list[float]:
    """Seconds from a stage to arrival: per delivery ``(sent_at, arrival)``, arrival minus
    the earliest ``stage`` time recorded for the same ``sent_at``.

    ``stage`` holds ``(sent_at, reached_at)`` pairs (e.g. the router's produce time per
    task); ``sent_at`` identifies the event (it is unique per publish), matched within
    ``tolerance`` because the receiver's copy went through a subtraction. Deliveries of
    events the stage never saw are left out.
    """
    earliest: dict[float, float] = {}
    for sent, reached in stage:
        if sent not in earliest or reached < earliest[sent]:
            earliest[sent] = reached
    keys = sorted(earliest)
    since: list[float] = []
    for sent, arrival in deliveries:
        index = bisect.bisect_left(keys, sent - tolerance)
        matched = [earliest[k] for k in keys[index : index + 4] if k <= sent + tolerance]
        if matched:
            since.append(arrival - min(matched))
    return since


def timeline(
    sent_at: Sequence[float], latencies: Sequence[float], bucket_s: float = 1.0
) -> list[list[float]]:
    """Latency over the run: ``[second, count, p50, max]`` per ``bucket_s`` of sending.

    Shows whether slow deliveries cluster (start-up, a rebalance) or spread evenly.
    """
    if not sent_at:
        return []
    start = min(sent_at)
    buckets: dict[int, list[float]] = {}
    for sent, latency in zip(sent_at, latencies, strict=True):
        buckets.setdefault(int((sent - start) / bucket_s), []).append(latency)
    return [
        [
            round(index * bucket_s, 3),
            float(len(values)),
            round(percentile(values, 50) or 0.0, 4),
            round(max(values), 4),
        ]
        for index, values in sorted(buckets.items())
    ]
