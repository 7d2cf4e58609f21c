"""Plain-text tables of a results document and of a comparison of two runs (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# (3) latency and (6) fanout measure the same figures for two shapes of load.
_LATENCY: tuple[tuple[str, str], ...] = (
    ("achieved_rate", "published events/s"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("routed_p50_ms", "router stage p50 ms"),
    ("routed_p99_ms", "router stage p99 ms"),
    ("deliverer_stage_p50_ms", "deliverer stage p50 ms"),
    ("deliverer_stage_p99_ms", "deliverer stage p99 ms"),
    ("missing", "missing deliveries"),
    ("broker_floor_p50_ms", "broker floor p50 ms"),
    ("broker_floor_p99_ms", "broker floor p99 ms"),
    ("broker_floor_broker_core_share", "broker floor: broker share of a core"),
)

# The figures each scenario shows in the table; everything else is in the JSON.
HEADLINES: dict[str, tuple[tuple[str, str], ...]] = {
    "ceiling": (
        ("requests_per_s", "requests/s"),
        ("client_cpu_us_per_request", "client CPU µs/request"),
        ("receiver_cpu_us_per_request", "receiver CPU µs/request"),
        *(
            (f"{sender}_{loop}_{figure}", f"{sender} on {loop}: {label}")
            for sender in ("aiohttp", "fast")
            for loop in ("asyncio", "uvloop")
            for figure, label in (
                ("requests_per_s", "requests/s"),
                ("client_cpu_us_per_request", "CPU µs/request"),
            )
        ),
    ),
    "fanout": _LATENCY,
    "throughput": (
        ("deliveries_per_s", "deliveries/s"),
        ("ratio_to_ceiling", "ratio to ceiling"),
        ("cpu_us_per_delivery", "dispatcher CPU µs/delivery"),
        ("cpu_ratio_to_ceiling", "CPU ratio to ceiling"),
        ("like_for_like_ratio", "ratio to aiohttp on the same loop"),
        ("like_for_like_cpu_ratio", "CPU ratio to aiohttp, same loop"),
        ("deliverer_core_share", "deliverer share of a core"),
        ("deliverer_peak_rss_mb", "deliverer peak RSS MB"),
        ("duplicates", "duplicates"),
    ),
    "latency": _LATENCY,
    "isolation": (
        ("healthy_deliveries_per_s", "healthy deliveries/s"),
        ("ratio_to_throughput", "ratio to throughput"),
        ("healthy_p99_s", "healthy p99 completion s"),
        ("p99_ratio_to_throughput", "p99 ratio to throughput"),
    ),
    "filters": (
        ("worst_us_per_event", "worst-case filter µs/event"),
        ("issue_example_us_per_event", "issue 28 example µs/event"),
        ("plain_us_per_event", "one-condition filter µs/event"),
    ),
    "backlog": (
        ("deliverer_peak_rss_mb", "deliverer peak RSS MB"),
        ("drain_per_s", "drain deliveries/s"),
        ("order_violations", "order violations"),
        ("parked_webhooks_max", "parked webhooks (max)"),
        ("broker_peak_rss_mb", "broker peak RSS MB"),
    ),
}


def format_value(value: Any) -> str:
    """A figure as shown in tables: thousands separators, at most 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.3g}" if abs(value) < 1 else f"{value:,.2f}"
    return str(value)


def _target_cell(targets: list[dict[str, Any]], metric: str) -> str:
    for target in targets:
        if target["metric"] == metric:
            verdict = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
            if target["met"] is False and target.get("reachable") is False:
                verdict += " (below this broker's floor)"
            return f"{target['op']} {format_value(target['goal'])} {verdict}"
    return ""


def format_table(doc: dict[str, Any]) -> str:
    """The run's headline figures, one row per figure, with the issue's targets."""
    rows: list[tuple[str, str, str, str]] = [("scenario", "figure", "value", "target")]
    for name, entry in doc["scenarios"].items():
        if entry["status"] != "ok":
            rows.append((name, entry["status"].upper(), "", entry.get("reason") or ""))
            continue
        metrics, targets = entry["metrics"], entry["targets"]
        shown = {metric for metric, _ in HEADLINES.get(name, ())}
        lines = [(m, label) for m, label in HEADLINES.get(name, ()) if m in metrics]
        # A target on a metric that is not a headline still gets its row.
        lines += [(t["metric"], t["name"]) for t in targets if t["metric"] not in shown]
        for index, (metric, label) in enumerate(lines):
            rows.append(
                (
                    name if index == 0 else "",
                    label,
                    format_value(metrics.get(metric)),
                    _target_cell(targets, metric),
                )
            )
    return _render(rows)


def format_comparison(rows: list[tuple[str, str, Any, Any, str]]) -> str:
    """The table of ``results.compare`` rows."""
    table = [("scenario", "metric", "old", "new", "change")]
    table += [(s, m, format_value(a), format_value(b), c) for s, m, a, b, c in rows]
    return _render(table)


def _render(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
