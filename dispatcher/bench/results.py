"""The results document: one JSON file per run, with a stable, versioned schema.

Schema (``schema_version`` 2; documented in docs/BENCHMARKS.md)::

    {"schema_version": 2, "started_at": ISO-8601, "finished_at": ISO-8601,
     "quick": bool, "host": {...}, "options": {...},
     "scenarios": {"<name>": {"status": "ok" | "skipped" | "failed",
                              "reason": str | null, "params": {...},
                              "metrics": {...}, "targets": [Target, ...]}}}

A ``Target`` is ``{"name", "metric", "op": "<=" | ">=", "goal", "value", "met"}``;
``met`` is null when the value could not be measured. Adding a metric is compatible;
renaming or removing one bumps ``schema_version``.

Version 2 (issue 12): the targets are P1-P5 (deliveries/s >= 1.0x and CPU <= 1.0x the
bare aiohttp client, p50/p99 for both latency shapes, the backlog at full size); the
ceiling reports four client variants; scenario 6, ``fanout``, is new. Since then
(compatible): (3) and (6) report ``broker_floor_*`` metrics, and their P3 targets carry
``floor`` (what a null pipeline reaches on the same broker) and ``reachable`` (whether
the goal is within that floor; null without one). Scenario 7, ``filters``
(issue 28), times the worst-case filter evaluation per event, in process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Self

SCHEMA_VERSION = 2
SCENARIOS = (
    "ceiling",
    "throughput",
    "latency",
    "isolation",
    "backlog",
    "fanout",
    "options",
    "filters",
)
Status = Literal["ok", "skipped", "failed"]
STATUSES = frozenset({"ok", "skipped", "failed"})


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A goal from the issue: ``metric op goal``; ``floor``: the metric of the best value
    the broker allows at all (``dispatcher.bench.floor``), where one is measured."""

    name: str
    metric: str
    op: Literal["<=", ">="]
    goal: float
    floor: str | None = None


# The compass of the project (issues 6 and 12). Ratios are measured within one run,
# against the bare aiohttp client on asyncio's default loop.
_P3 = (
    TargetSpec("P3 p50 latency (ms)", "p50_ms", "<=", 10.0, floor="broker_floor_p50_ms"),
    TargetSpec("P3 p99 latency (ms)", "p99_ms", "<=", 50.0, floor="broker_floor_p99_ms"),
)
TARGETS: dict[str, tuple[TargetSpec, ...]] = {
    "throughput": (
        TargetSpec("P1 deliveries/s vs bare client", "ratio_to_ceiling", ">=", 1.0),
        TargetSpec("P2 CPU per delivery vs bare client", "cpu_ratio_to_ceiling", "<=", 1.0),
    ),
    "latency": _P3,
    "fanout": _P3,
    "isolation": (
        TargetSpec("healthy deliveries/s vs throughput", "ratio_to_throughput", ">=", 0.9),
        TargetSpec("healthy p99 vs throughput", "p99_ratio_to_throughput", "<=", 2.0),
    ),
    "backlog": (
        TargetSpec("P5 full size (1M events, 10k webhooks)", "full_size", ">=", 1.0),
        TargetSpec("P5 peak deliverer RSS (MB)", "deliverer_peak_rss_mb", "<=", 300.0),
        TargetSpec("P5 drain rate (deliveries/s)", "drain_per_s", ">=", 1000.0),
        TargetSpec("P5 order violations", "order_violations", "<=", 0.0),
    ),
}


def evaluate(spec: TargetSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    """The target entry for ``metrics``: its value and whether the goal is met.

    A target with a floor also says what the broker alone reaches (``floor``) and
    whether the goal is within it (``reachable``; null when no floor was measured).
    """
    value = metrics.get(spec.metric)
    entry = {
        "name": spec.name,
        "metric": spec.metric,
        "op": spec.op,
        "goal": spec.goal,
        "value": value,
        "met": _meets(value, spec),
    }
    if spec.floor is not None:
        floor = metrics.get(spec.floor)
        entry["floor"] = floor
        entry["reachable"] = _meets(floor, spec)
    return entry


def _meets(value: Any, spec: TargetSpec) -> bool | None:
    if not _is_number(value):
        return None
    return bool(value <= spec.goal if spec.op == "<=" else value >= spec.goal)


@dataclass(slots=True)
class ScenarioResult:
    """What one scenario measured (or why it did not run)."""

    name: str
    status: Status = "ok"
    reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def skipped(cls, name: str, reason: str, params: dict[str, Any] | None = None) -> Self:
        """A scenario that could not run here, with the reason."""
        return cls(name, "skipped", reason, params or {})

    @classmethod
    def failed(cls, name: str, reason: str, params: dict[str, Any] | None = None) -> Self:
        """A scenario that started but broke, with the reason."""
        return cls(name, "failed", reason, params or {})

    def to_dict(self) -> dict[str, Any]:
        """The scenario's entry in the results document."""
        targets = [evaluate(spec, self.metrics) for spec in TARGETS.get(self.name, ())]
        return {
            "status": self.status,
            "reason": self.reason,
            "params": self.params,
            "metrics": self.metrics,
            "targets": targets if self.status == "ok" else [],
        }


def document(
    scenarios: list[ScenarioResult],
    *,
    started_at: str,
    finished_at: str,
    quick: bool,
    host: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """The whole results document for one run."""
    return {
        "schema_version": SCHEMA_VERSION,
        "started_at": started_at,
        "finished_at": finished_at,
        "quick": quick,
        "host": host,
        "options": options,
        "scenarios": {result.name: result.to_dict() for result in scenarios},
    }


class SchemaError(ValueError):
    """A results document does not follow the schema this code understands."""


def check_document(doc: Any) -> dict[str, Any]:
    """Validate the shape of a results document (for comparing runs); returns it."""
    if not isinstance(doc, dict):
        raise SchemaError("the results document is not a JSON object")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"schema_version {version!r} is not {SCHEMA_VERSION}")
    scenarios = doc.get("scenarios")
    if not isinstance(scenarios, dict):
        raise SchemaError("scenarios is missing or not an object")
    for name, entry in scenarios.items():
        if not isinstance(entry, dict) or entry.get("status") not in STATUSES:
            raise SchemaError(f"scenario {name!r} has no valid status")
        if not isinstance(entry.get("metrics"), dict):
            raise SchemaError(f"scenario {name!r} has no metrics object")
    return doc


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, Any, Any, str]]:
    """Rows ``(scenario, metric, old, new, change)`` for every numeric metric in both runs.

    ``change`` is the relative change of new against old (``+12.5%``), or ``""``
    where it cannot be computed.
    """
    rows: list[tuple[str, str, Any, Any, str]] = []
    old_scenarios = check_document(old)["scenarios"]
    new_scenarios = check_document(new)["scenarios"]
    for name in [n for n in SCENARIOS if n in old_scenarios or n in new_scenarios]:
        old_metrics = old_scenarios.get(name, {}).get("metrics", {})
        new_metrics = new_scenarios.get(name, {}).get("metrics", {})
        for metric in sorted(set(old_metrics) | set(new_metrics)):
            before, after = old_metrics.get(metric), new_metrics.get(metric)
            if not (_is_number(before) or _is_number(after)):
                continue
            rows.append((name, metric, before, after, relative_change(before, after)))
    return rows


def relative_change(before: Any, after: Any) -> str:
    """``+12.5%`` style change from ``before`` to ``after``; ``""`` if not computable."""
    if not (_is_number(before) and _is_number(after)) or before == 0:
        return ""
    return f"{(after - before) / abs(before) * 100:+.1f}%"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
