"""The metric registry matches DESIGN.md §5, and the pure helpers behind the gauges."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.delivery.delivery_logs import DeliveryLog, keep_line
from dispatcher.ops.lane_gauges import count_lanes
from dispatcher.ops.loop_lag import monitor_loop_lag
from dispatcher.ops.metrics import (
    ROLES,
    DelivererMetrics,
    Families,
    Role,
    RouterMetrics,
    build_registry,
    latency_buckets,
    version,
)

# DESIGN.md §5, copied by hand: (name, type, labels, processes). A change to the
# contract must change this table on purpose.
CONTRACT = {
    "hooklane_events_routed_total": ("counter", {"topic"}, {"router"}),
    "hooklane_events_dead_lettered_total": ("counter", {"reason"}, {"router", "deliverer"}),
    "hooklane_events_filtered_total": ("counter", set(), {"router"}),
    "hooklane_attempts_total": ("counter", {"outcome"}, {"deliverer"}),
    "hooklane_attempt_duration_seconds": ("histogram", {"outcome"}, {"deliverer"}),
    "hooklane_deliveries_total": ("counter", {"outcome"}, {"deliverer"}),
    "hooklane_in_flight_requests": ("gauge", set(), {"deliverer"}),
    "hooklane_lanes": ("gauge", {"state"}, {"deliverer"}),
    "hooklane_backlog_deliveries": ("gauge", set(), {"deliverer"}),
    "hooklane_backlog_oldest_age_seconds": ("gauge", set(), {"deliverer"}),
    "hooklane_consumer_lag": ("gauge", {"group", "topic", "partition"}, {"router", "deliverer"}),
    "hooklane_commit_duration_seconds": ("histogram", {"group"}, {"router", "deliverer"}),
    "hooklane_attempt_log_rows_total": ("counter", {"result"}, {"deliverer"}),
    "hooklane_event_loop_lag_seconds": ("gauge", set(), {"api", "router", "deliverer"}),
    "hooklane_http_requests_total": ("counter", {"method", "route", "status"}, {"api"}),
    "hooklane_http_request_duration_seconds": ("histogram", {"route"}, {"api"}),
    "hooklane_build_info": ("gauge", {"version", "commit"}, {"api", "router", "deliverer"}),
}


def exposed(families_text: str) -> dict[str, tuple[str, set[str]]]:
    """{exported name: (type, label names)} of a text exposition, with children touched."""
    found = {}
    for family in text_string_to_metric_families(families_text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        found[name] = (family.type, labels)
    return found


def touch_everything(families: Families) -> None:
    """Create one child of every labelled metric, so labels appear in the exposition."""
    from dispatcher.ops.metrics import METRICS

    for spec in METRICS:
        if not spec.labels or spec.name == "build_info":
            continue
        values = dict.fromkeys(spec.labels, "x")
        getter = {"counter": families.counter, "gauge": families.gauge}.get(
            spec.kind, families.histogram
        )
        getter(spec.name).labels(**values)


def test_full_registry_exports_exactly_the_contract() -> None:
    """Every §5 metric is exported with its type and labels, and nothing else."""
    families = build_registry()
    touch_everything(families)
    found = exposed(generate_latest(families.registry).decode())
    assert {name: (kind, labels) for name, (kind, labels, _) in CONTRACT.items()} == found


@pytest.mark.parametrize("role", ROLES)
def test_each_role_exports_its_own_metrics(role: Role) -> None:
    """A process's registry holds exactly the metrics §5 assigns to its role."""
    families = build_registry((role,))
    found = exposed(generate_latest(families.registry).decode())
    assert set(found) == {name for name, (_, _, roles) in CONTRACT.items() if role in roles}


def test_build_info_carries_version_and_commit() -> None:
    """build_info is 1 with the package version and the given commit."""
    families = build_registry(("router",), commit="abc123")
    sample = families.registry.get_sample_value(
        "hooklane_build_info", {"version": version(), "commit": "abc123"}
    )
    assert sample == 1.0
    assert version() != "unknown"  # installed editable: metadata is there


@pytest.mark.parametrize(
    ("timeout_s", "first", "last", "below_last"),
    [
        (10.0, 0.001, 10.0, 5.0),
        (5.0, 0.001, 5.0, 2.5),
        (3.0, 0.001, 3.0, 2.5),
        (0.5, 0.001, 0.5, 0.25),
        (300.0, 0.001, 300.0, 120.0),
    ],
)
def test_latency_buckets_span_1ms_to_the_delivery_timeout(
    timeout_s: float, first: float, last: float, below_last: float
) -> None:
    """Buckets start at 1 ms, rise strictly and end exactly at the delivery timeout."""
    buckets = latency_buckets(timeout_s)
    assert buckets[0] == first and buckets[-1] == last and buckets[-2] == below_last
    assert list(buckets) == sorted(set(buckets))


def test_attempt_histogram_uses_the_timeout_buckets() -> None:
    """An attempt at the timeout lands in the last finite bucket, not +Inf only."""
    families = build_registry(("deliverer",), delivery_timeout_s=5.0)
    metrics = DelivererMetrics(families, "g")
    metrics.duration_failure.observe(5.0)
    get = families.registry.get_sample_value
    labels = {"outcome": "failure"}
    assert get("hooklane_attempt_duration_seconds_bucket", {**labels, "le": "5.0"}) == 1.0
    assert get("hooklane_attempt_duration_seconds_bucket", {**labels, "le": "2.5"}) == 0.0


def test_prebound_children_count_into_the_labelled_series() -> None:
    """The deliverer's and router's prebound children feed the right label values."""
    families = build_registry(("router", "deliverer"))
    deliverer = DelivererMetrics(families, "hooklane-deliverer")
    router = RouterMetrics(families, "hooklane-router")
    deliverer.attempt_timeout.inc()
    deliverer.delivered.inc(3)
    deliverer.attempt_log_dropped.inc()
    router.routed("A.B").inc()
    router.routed("A.B").inc()
    router.dead_lettered("invalid_json").inc()
    router.commit_duration.observe(0.01)
    get = families.registry.get_sample_value
    assert get("hooklane_attempts_total", {"outcome": "timeout"}) == 1.0
    assert get("hooklane_deliveries_total", {"outcome": "delivered"}) == 3.0
    assert get("hooklane_attempt_log_rows_total", {"result": "dropped"}) == 1.0
    assert get("hooklane_events_routed_total", {"topic": "A.B"}) == 2.0
    assert get("hooklane_events_dead_lettered_total", {"reason": "invalid_json"}) == 1.0
    assert get("hooklane_commit_duration_seconds_count", {"group": "hooklane-router"}) == 1.0


@pytest.mark.parametrize(
    ("sample", "draws", "kept"),
    [
        (1.0, [0.99, 0.0], [True, True]),
        (0.0, [0.0, 0.5], [False, False]),
        (0.25, [0.1, 0.25, 0.3, 0.249], [True, False, False, True]),
    ],
)
def test_keep_line_keeps_the_sampled_fraction(
    sample: float, draws: list[float], kept: list[bool]
) -> None:
    """A line is kept when the draw falls below the sample fraction."""

    class Draws(random.Random):
        def __init__(self) -> None:
            super().__init__()
            self.values = iter(draws)

        def random(self) -> float:
            return next(self.values)

    rng = Draws()
    assert [keep_line(sample, rng) for _ in draws] == kept


def test_delivery_log_lines_carry_correlation_fields_and_sample_successes() -> None:
    """Failures always log with event/webhook/tenant/attempt; successes only when sampled."""
    from structlog.testing import capture_logs

    log = DeliveryLog(sample=0.0, rng=random.Random(1))
    with capture_logs() as logs:
        log.success("evt_1", "wh_1", "ten_1", 1, status=200)
        log.failure("evt_1", "wh_1", "ten_1", 2, status=500)
    assert logs == [
        {
            "event": "delivery.failed",
            "log_level": "warning",
            "event_id": "evt_1",
            "webhook_id": "wh_1",
            "tenant_id": "ten_1",
            "attempt": 2,
            "status": 500,
        }
    ]
    with capture_logs() as logs:
        DeliveryLog(sample=1.0).success("evt_2", "wh_1", "ten_1", 1)
    assert [entry["event_id"] for entry in logs] == ["evt_2"]


@pytest.mark.parametrize(
    ("status", "sample", "expected"),
    [
        (200, 1.0, [("delivery.succeeded", None)]),
        (200, 0.0, []),
        (503, 0.0, [("delivery.failed", "retry")]),
        (None, 0.0, [("delivery.failed", "retry")]),
    ],
)
def test_attempted_logs_one_line_per_attempt_result(
    status: int | None, sample: float, expected: list[tuple[str, str | None]]
) -> None:
    """An attempt result logs as a sampled success or an always-kept failure with its action."""
    from structlog.testing import capture_logs

    result = AttemptResult(
        webhook_id="wh_1",
        tenant_id="ten_1",
        event_id="evt_1",
        topic="T",
        attempt=3,
        attempted_at=0.0,
        duration_ms=1.5,
        status_code=status,
        error=None if status == 200 else "HTTP 503",
    )
    with capture_logs() as logs:
        DeliveryLog(sample).attempted(result, "retry")
    assert [(line["event"], line.get("action")) for line in logs] == expected
    for line in logs:
        assert (line["event_id"], line["webhook_id"], line["tenant_id"], line["attempt"]) == (
            "evt_1",
            "wh_1",
            "ten_1",
            3,
        )


@dataclass
class FakeLane:
    parked: bool = False
    in_flight: int = 0
    next_attempt_at: float = 0.0
    failures: int = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0


@pytest.mark.parametrize(
    ("lanes", "expected"),
    [
        ([], (0, 0)),
        ([FakeLane(in_flight=2), FakeLane()], (2, 0)),
        ([FakeLane(failures=1, next_attempt_at=150.0)], (0, 1)),
        ([FakeLane(failures=1, next_attempt_at=50.0, in_flight=1)], (1, 0)),
        ([FakeLane(parked=True, failures=3, next_attempt_at=500.0)], (0, 0)),
    ],
)
def test_count_lanes_by_state(lanes: list[FakeLane], expected: tuple[int, ...]) -> None:
    """Parked lanes count in neither; a failing lane whose retry is due counts as ready."""
    counts = count_lanes(lanes, now=100.0)
    assert (counts.ready, counts.backoff) == expected


async def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    """Blocking the event loop shows up in the event-loop lag gauge."""
    families = build_registry(("api",))
    gauge = families.gauge("event_loop_lag_seconds")
    get = families.registry.get_sample_value
    highest = 0.0
    task = asyncio.create_task(monitor_loop_lag(gauge, interval_s=0.01))
    await asyncio.sleep(0.02)
    time.sleep(0.3)  # noqa: ASYNC251 - the blocking call to detect: the monitor wakes ~0.3 s late
    for _ in range(100):
        await asyncio.sleep(0)
        highest = max(highest, get("hooklane_event_loop_lag_seconds") or 0.0)
        if highest > 0.2:
            break
    task.cancel()
    assert highest > 0.2
