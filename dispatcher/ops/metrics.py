"""Every Prometheus metric of Hooklane, defined once (DESIGN.md §5).

``METRICS`` is the table of names, types, labels and the processes that export each.
``build_registry(role, ...)`` registers the metrics of one process role (or of all
roles, for tests that cross-check names) on a fresh ``CollectorRegistry`` and returns a
``Families`` handle; the role classes below (``RouterMetrics``, ``DelivererMetrics``,
``ApiMetrics``) prebind the labelled children a hot path touches, so a per-event call
is one attribute access and one ``inc()``/``observe()`` with no label lookup.

No per-webhook label by default: cardinality. Per-webhook detail is ``hooklane status``
and the API. ``HOOKLANE_METRICS_WEBHOOK_LABELS=true`` adds ``WEBHOOK_METRICS``: gauges
with a ``webhook_id`` label for the top ``TOP_WEBHOOKS`` webhooks only (refreshed from
Postgres, the rest cleared), so the series count stays bounded however many webhooks exist.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

NAMESPACE = "hooklane"
Role = Literal["api", "router", "deliverer"]
ROLES: tuple[Role, ...] = ("api", "router", "deliverer")
Kind = Literal["counter", "gauge", "histogram"]

# Webhook latencies: a loopback receiver answers in about a millisecond, a slow one
# at the delivery timeout; roughly 1-2.5-5 per decade in between.
_LATENCY_STEPS: tuple[float, ...] = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the operations contract."""

    name: str  # without the namespace; counters keep their ``_total``
    kind: Kind
    help: str
    labels: tuple[str, ...]
    roles: tuple[Role, ...]

    @property
    def full_name(self) -> str:
        """The exported name, e.g. ``hooklane_attempts_total``."""
        return f"{NAMESPACE}_{self.name}"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("events_routed_total", "counter", "Events routed", ("topic",), ("router",)),
    MetricSpec(
        "events_dead_lettered_total",
        "counter",
        "Messages sent to the dead-letter topic, by reason",
        ("reason",),
        ("router", "deliverer"),
    ),
    MetricSpec(
        "events_filtered_total", "counter", "Events no subscription filter matched", (), ("router",)
    ),
    MetricSpec(
        "attempts_total", "counter", "Delivery attempts by outcome", ("outcome",), ("deliverer",)
    ),
    MetricSpec(
        "attempt_duration_seconds",
        "histogram",
        "Duration of delivery attempts (success or failure)",
        ("outcome",),
        ("deliverer",),
    ),
    MetricSpec(
        "deliveries_total",
        "counter",
        "Deliveries finished: delivered, given up or parked",
        ("outcome",),
        ("deliverer",),
    ),
    MetricSpec("in_flight_requests", "gauge", "Requests in flight", (), ("deliverer",)),
    MetricSpec(
        "lanes", "gauge", "Webhook lanes of this process by state", ("state",), ("deliverer",)
    ),
    MetricSpec(
        "backlog_deliveries",
        "gauge",
        "Deliveries parked in the Postgres backlog (global)",
        (),
        ("deliverer",),
    ),
    MetricSpec(
        "backlog_oldest_age_seconds",
        "gauge",
        "Age of the oldest backlog entry (global; 0 when empty)",
        (),
        ("deliverer",),
    ),
    MetricSpec(
        "consumer_lag",
        "gauge",
        "High-water mark minus committed offset",
        ("group", "topic", "partition"),
        ("router", "deliverer"),
    ),
    MetricSpec(
        "commit_duration_seconds",
        "histogram",
        "Duration of Kafka offset commits",
        ("group",),
        ("router", "deliverer"),
    ),
    MetricSpec(
        "attempt_log_rows_total",
        "counter",
        "Attempt-log rows written to Postgres or dropped",
        ("result",),
        ("deliverer",),
    ),
    MetricSpec("event_loop_lag_seconds", "gauge", "Scheduling delay of the event loop", (), ROLES),
    MetricSpec(
        "http_requests_total",
        "counter",
        "API requests by method, route template and status",
        ("method", "route", "status"),
        ("api",),
    ),
    MetricSpec(
        "http_request_duration_seconds",
        "histogram",
        "API request duration by route template",
        ("route",),
        ("api",),
    ),
    MetricSpec("build_info", "gauge", "Always 1; the build", ("version", "commit"), ROLES),
)


# The opt-in per-webhook gauges (deliverer; global, like the backlog gauges: max()).
TOP_WEBHOOKS = 20
WEBHOOK_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "webhook_backlog_deliveries",
        "gauge",
        f"Backlog deliveries of the {TOP_WEBHOOKS} parked webhooks with the most (opt-in)",
        ("webhook_id",),
        ("deliverer",),
    ),
    MetricSpec(
        "webhook_consecutive_failures",
        "gauge",
        f"Consecutive failures of the {TOP_WEBHOOKS} webhooks failing longest (opt-in)",
        ("webhook_id",),
        ("deliverer",),
    ),
)


def latency_buckets(timeout_s: float) -> tuple[float, ...]:
    """Histogram buckets from 1 ms up to ``timeout_s`` (which is always the last bound)."""
    steps = tuple(step for step in _LATENCY_STEPS if step < timeout_s)
    return (*steps, timeout_s)


class Families:
    """The metric families registered on one registry, by exported name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}

    def add(self, spec: MetricSpec, buckets: tuple[float, ...]) -> None:
        """Register ``spec``."""
        registry, labels = self.registry, spec.labels
        if spec.kind == "counter":
            self._counters[spec.name] = Counter(
                spec.full_name, spec.help, labels, registry=registry
            )
        elif spec.kind == "gauge":
            self._gauges[spec.name] = Gauge(spec.full_name, spec.help, labels, registry=registry)
        else:
            self._histograms[spec.name] = Histogram(
                spec.full_name, spec.help, labels, registry=registry, buckets=buckets
            )

    def counter(self, name: str) -> Counter:
        """The counter ``name`` (as in ``METRICS``); KeyError when not registered."""
        return self._counters[name]

    def gauge(self, name: str) -> Gauge:
        """The gauge ``name``."""
        return self._gauges[name]

    def histogram(self, name: str) -> Histogram:
        """The histogram ``name``."""
        return self._histograms[name]


def build_registry(
    roles: Iterable[Role] = ROLES,
    *,
    delivery_timeout_s: float = 10.0,
    commit: str | None = None,
    webhook_labels: bool = False,
) -> Families:
    """A fresh registry holding the metrics of ``roles`` (default: all), build_info set.

    ``webhook_labels`` adds the opt-in ``WEBHOOK_METRICS`` of those roles.
    """
    # The `_created` series double the series count and no dashboard or alert uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    wanted = set(roles)
    families = Families(CollectorRegistry(auto_describe=True))
    for spec in (*METRICS, *(WEBHOOK_METRICS if webhook_labels else ())):
        if wanted & set(spec.roles):
            families.add(spec, latency_buckets(delivery_timeout_s))
    families.gauge("build_info").labels(version=version(), commit=commit or git_commit()).set(1)
    return families


def version() -> str:
    """The installed package's version."""
    try:
        return importlib.metadata.version("hooklane")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def git_commit() -> str:
    """The short commit of a source checkout, or ``unknown`` (images carry no .git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


class _ConsumerMetrics:
    """What router and deliverer both count: commits of their group, dead letters."""

    def __init__(self, families: Families, group: str) -> None:
        self.commit_duration = families.histogram("commit_duration_seconds").labels(group=group)
        self._dead_lettered = families.counter("events_dead_lettered_total")

    def dead_lettered(self, reason: str) -> Counter:
        """The dead-letter counter of ``reason`` (rare: no prebinding)."""
        return self._dead_lettered.labels(reason=reason)


class RouterMetrics(_ConsumerMetrics):
    """What the router counts; the per-topic child is cached per topic name."""

    def __init__(self, families: Families, group: str) -> None:
        super().__init__(families, group)
        self._routed = families.counter("events_routed_total")
        self._routed_by_topic: dict[str, Counter] = {}
        self.filtered = families.counter("events_filtered_total")

    def routed(self, topic: str) -> Counter:
        """The routed counter of ``topic`` (``.inc()`` it); one child per topic."""
        child = self._routed_by_topic.get(topic)
        if child is None:
            child = self._routed_by_topic[topic] = self._routed.labels(topic=topic)
        return child


class DelivererMetrics(_ConsumerMetrics):
    """What the deliverer counts, every child prebound (one attribute per outcome)."""

    def __init__(self, families: Families, group: str) -> None:
        super().__init__(families, group)
        attempts = families.counter("attempts_total")
        self.attempt_success = attempts.labels(outcome="success")
        self.attempt_http_error = attempts.labels(outcome="http_error")
        self.attempt_timeout = attempts.labels(outcome="timeout")
        self.attempt_connection_error = attempts.labels(outcome="connection_error")
        self.attempt_blocked = attempts.labels(outcome="blocked")
        duration = families.histogram("attempt_duration_seconds")
        self.duration_success = duration.labels(outcome="success")
        self.duration_failure = duration.labels(outcome="failure")
        deliveries = families.counter("deliveries_total")
        self.delivered = deliveries.labels(outcome="delivered")
        self.gave_up = deliveries.labels(outcome="gave_up")
        self.parked = deliveries.labels(outcome="parked")
        # A plain count, read when scraped: two locked gauge updates per attempt saved.
        self.requests_in_flight = 0
        families.gauge("in_flight_requests").set_function(lambda: self.requests_in_flight)
        lanes = families.gauge("lanes")
        self.lanes_ready = lanes.labels(state="ready")
        self.lanes_backoff = lanes.labels(state="backoff")
        self.lanes_parked = lanes.labels(state="parked")
        rows = families.counter("attempt_log_rows_total")
        self.attempt_log_written = rows.labels(result="written")
        self.attempt_log_dropped = rows.labels(result="dropped")


class ApiMetrics:
    """The API's request metrics (labelled per request: routes are few and fixed)."""

    def __init__(self, families: Families) -> None:
        self.requests = families.counter("http_requests_total")
        self.duration = families.histogram("http_request_duration_seconds")
