"""Scenario 7, ``filters``: the worst-case time one event spends in webhook filters.

In process, no broker: each case compiles one adversarial filter, as the API would
accept it, and times its evaluation on an adversarial event of the same tenant (the
router evaluates every subscribed webhook's filter per event). The headline,
``worst_us_per_event``, is the slowest case; ``plain_us_per_event`` is a one-condition
filter on a small event, for scale. The cases:

- ``issue_example``: issue 28's ``{"data.x": {"$in": [[]] * 1355}}`` on an event with
  ``{"x": [[0]] * 10000}`` (before the bounds: about 2 s per event).
- ``composite_budget``: as many 32-value arrays in ``$in`` as the cost estimate
  admits, against 10,000 arrays of the same shape that differ only in the last value
  (a key is built for each value looked at).
- ``max_conditions``: 64 scalar conditions that never match, on arrays of 100,000
  numbers and of 10,000 objects reached through paths into arrays.

``python -m dispatcher.bench.filter_cost`` prints the figures as JSON.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from dispatcher.bench.results import ScenarioResult
from dispatcher.subscription.filters import (
    MAX_COMPOSITE_NODES,
    MAX_COST,
    MAX_SCAN,
    compile_filter,
    condition_cost,
    event_view,
)

Case = tuple[dict[str, Any], dict[str, Any]]


def _composite_budget() -> Case:
    choice = [0] * (MAX_COMPOSITE_NODES - 1)  # an array of 31 numbers: 32 values
    per_condition = condition_cost([choice])
    count = MAX_COST // per_condition
    spec = {f"data.x{i}": {"$in": [choice]} for i in range(count)}
    near_miss = [0] * (MAX_COMPOSITE_NODES - 2) + [1]
    return spec, {f"x{i}": [near_miss] * 10_000 for i in range(count)}


def _max_conditions() -> Case:
    half = 32
    spec: dict[str, Any] = {f"data.n{i}": {"$gt": 10**9} for i in range(half)}
    spec |= {f"data.lines.f{i}": {"$in": ["absent"]} for i in range(half)}
    data: dict[str, Any] = {f"n{i}": list(range(100_000)) for i in range(half)}
    data["lines"] = [{f"f{i}": "present" for i in range(half)}] * 10_000
    return spec, data


CASES: dict[str, Callable[[], Case]] = {
    "issue_example": lambda: ({"data.x": {"$in": [[]] * 1355}}, {"x": [[0]] * 10_000}),
    "composite_budget": _composite_budget,
    "max_conditions": _max_conditions,
}


def time_case(spec: dict[str, Any], data: dict[str, Any], rounds: int) -> float:
    """Microseconds per evaluation of filter ``spec`` on an event carrying ``data``."""
    predicate = compile_filter(spec)  # raises when the API would refuse the filter
    event = event_view("BENCH.FILTERS", "bench", orjson.loads(orjson.dumps(data)))
    predicate(event)  # warm
    started = time.perf_counter()
    for _ in range(rounds):
        predicate(event)
    return (time.perf_counter() - started) / rounds * 1e6


def measure(rounds: int = 50) -> dict[str, Any]:
    """Each case's µs per event, the worst, and a plain filter's for scale."""
    metrics: dict[str, Any] = {
        f"{name}_us_per_event": round(time_case(*build(), rounds), 1)
        for name, build in CASES.items()
    }
    metrics["worst_us_per_event"] = max(metrics.values())
    metrics["plain_us_per_event"] = round(
        time_case({"data.amount": {"$gte": 100}}, {"amount": 150, "tags": ["a"]}, rounds * 100), 2
    )
    return metrics


def run_filter_cost(rounds: int = 50) -> ScenarioResult:
    """Scenario 7 as a result of the bench."""
    return ScenarioResult(
        "filters",
        params={"rounds": rounds, "max_scan": MAX_SCAN, "max_cost": MAX_COST},
        metrics=measure(rounds),
    )


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(measure(), option=orjson.OPT_INDENT_2).decode() + "\n")
