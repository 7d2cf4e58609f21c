"""Unit tests of the benchmark suite's pure parts: statistics, the results schema,
argument parsing, the receiver's parsing and the table. No timing assertions."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.bench import pipeline, procs, profiling, receiver, report, stats, workload
from dispatcher.bench.options import FULL, QUICK, UsageError, parse_options, parse_scenarios
from dispatcher.bench.progress import Progress, render
from dispatcher.bench.results import (
    SCHEMA_VERSION,
    TARGETS,
    ScenarioResult,
    SchemaError,
    check_document,
    compare,
    document,
    evaluate,
    relative_change,
)
from dispatcher.bench.stack import (
    BENCH_TOPIC,
    Stack,
    bench_database_url,
    dispatcher_env,
    webhook_url,
)
from dispatcher.messages.wire import Event, delivery_body
from dispatcher.settings import Settings

# -- statistics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order of samples does not matter
        (list(range(1, 101)), 99, 99.01),
        ([10.0, 20.0], 90, 19.0),
    ],
)
def test_percentile_interpolates_linearly(samples, q, expected):
    """Percentiles follow numpy's default linear interpolation."""
    assert stats.percentile(samples, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none():
    """No samples give no percentile rather than a made-up zero."""
    assert stats.percentile([], 50) is None


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_rejects_out_of_range(q):
    """A percentile outside 0-100 is a programming error."""
    with pytest.raises(ValueError, match="0-100"):
        stats.percentile([1.0], q)


def test_summarize_scales_and_counts():
    """summarize reports count, p50/p90/p99/max, scaled (seconds to ms)."""
    summary = stats.summarize([0.001, 0.002, 0.003, 0.004, 0.010], scale=1000)
    assert summary == {"count": 5.0, "p50": 3.0, "p90": 7.6, "p99": 9.76, "max": 10.0}


def test_summarize_of_nothing_has_no_figures():
    """An empty sample set summarises to Nones, count 0."""
    assert stats.summarize([]) == {"count": 0.0, "p50": None, "p90": None, "p99": None, "max": None}


@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [
        (750.0, 1000.0, 0.75),
        (1.0, 3.0, 0.333),
        (None, 1000.0, None),
        (750.0, None, None),
        (750.0, 0.0, None),
    ],
)
def test_ratio(value, reference, expected):
    """Ratios are rounded to 3 places and None when either side is missing or zero."""
    assert stats.ratio(value, reference) == expected


@pytest.mark.parametrize(
    ("count", "seconds", "expected"), [(100, 2.0, 50.0), (0, 1.0, 0.0), (10, 0.0, None)]
)
def test_rate(count, seconds, expected):
    """A rate is count per second; no elapsed time gives None, not a division error."""
    assert stats.rate(count, seconds) == expected


@pytest.mark.parametrize(
    ("cpu", "items", "expected"), [(0.5, 1000, 500.0), (1.0, 3, 333333.3), (1.0, 0, None)]
)
def test_per_item_us(cpu, items, expected):
    """CPU seconds become microseconds per item."""
    assert stats.per_item_us(cpu, items) == expected


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ([0, 1, 2, 3], 0),
        ([0, 1, 1, 2], 0),  # an at-least-once duplicate is not a violation
        ([0, 2, 1, 3], 1),
        ([3, 2, 1, 0], 3),
        ([], 0),
    ],
)
def test_order_violations(sequence, expected):
    """A number below the highest seen so far is an order violation."""
    assert stats.order_violations(sequence) == expected


def test_timeline_buckets_by_send_time():
    """The timeline groups latencies by the second they were sent in."""
    sent = [100.0, 100.5, 101.2, 103.9]
    latencies = [0.01, 0.03, 0.02, 0.5]
    assert stats.timeline(sent, latencies) == [
        [0.0, 2.0, 0.02, 0.03],
        [1.0, 1.0, 0.02, 0.02],
        [3.0, 1.0, 0.5, 0.5],
    ]
    assert stats.timeline([], []) == []


# -- results schema ---------------------------------------------------------------------


def _doc(metrics_by_scenario: dict[str, dict[str, Any]]) -> dict[str, Any]:
    results = [ScenarioResult(name, metrics=m) for name, m in metrics_by_scenario.items()]
    return document(
        results,
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:01:00+00:00",
        quick=True,
        host={"cpus": 2},
        options={"events": 10},
    )


def test_document_has_the_versioned_schema():
    """The results document carries schema_version and every documented key."""
    doc = _doc({"ceiling": {"requests_per_s": 1000.0}})
    assert doc["schema_version"] == SCHEMA_VERSION
    assert set(doc) == {
        "schema_version",
        "started_at",
        "finished_at",
        "quick",
        "host",
        "options",
        "scenarios",
    }
    assert set(doc["scenarios"]["ceiling"]) == {"status", "reason", "params", "metrics", "targets"}
    # It survives a JSON round trip unchanged and passes its own check.
    assert check_document(orjson.loads(orjson.dumps(doc))) == doc


def test_document_evaluates_the_issue_targets():
    """Each scenario's targets from the issue are evaluated against its metrics."""
    doc = _doc({"throughput": {"ratio_to_ceiling": 1.1, "cpu_ratio_to_ceiling": 1.2}})
    targets = {t["metric"]: t for t in doc["scenarios"]["throughput"]["targets"]}
    assert targets["ratio_to_ceiling"]["met"] is True
    assert targets["cpu_ratio_to_ceiling"]["met"] is False
    assert [t["metric"] for t in doc["scenarios"]["throughput"]["targets"]] == [
        spec.metric for spec in TARGETS["throughput"]
    ]


@pytest.mark.parametrize(
    ("value", "met"), [(10.0, True), (9.0, True), (10.5, False), (None, None), (True, None)]
)
def test_evaluate_upper_bound(value, met):
    """A <= target is met at or below the goal and unknown when nothing was measured."""
    spec = TARGETS["latency"][0]  # p50 <= 10 ms
    assert evaluate(spec, {"p50_ms": value})["met"] is met


def test_skipped_scenario_keeps_its_reason_and_has_no_targets():
    """A skipped scenario says why and is not judged against targets."""
    entry = ScenarioResult.skipped("latency", "no pipeline").to_dict()
    assert entry["status"] == "skipped"
    assert entry["reason"] == "no pipeline"
    assert entry["targets"] == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a JSON object"),
        ({"schema_version": 99, "scenarios": {}}, "schema_version"),
        ({"schema_version": SCHEMA_VERSION}, "scenarios"),
        ({"schema_version": SCHEMA_VERSION, "scenarios": {"x": {"status": "?"}}}, "status"),
        (
            {"schema_version": SCHEMA_VERSION, "scenarios": {"x": {"status": "ok"}}},
            "metrics",
        ),
    ],
)
def test_check_document_rejects_other_shapes(doc, message):
    """Comparing runs refuses documents of another schema, naming the problem."""
    with pytest.raises(SchemaError, match=message):
        check_document(doc)


def test_compare_pairs_numeric_metrics_with_relative_change():
    """compare lists every numeric metric of either run with its change."""
    old = _doc({"ceiling": {"requests_per_s": 1000.0, "note": "x"}})
    new = _doc({"ceiling": {"requests_per_s": 1250.0}, "latency": {"p99_ms": 20.0}})
    rows = compare(old, new)
    assert ("ceiling", "requests_per_s", 1000.0, 1250.0, "+25.0%") in rows
    assert ("latency", "p99_ms", None, 20.0, "") in rows
    assert all(metric != "note" for _, metric, *_ in rows)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [(100, 90, "-10.0%"), (0, 5, ""), (None, 5, ""), (2.0, 3.0, "+50.0%"), (True, 1, "")],
)
def test_relative_change(before, after, expected):
    """Relative change is signed and empty when it cannot be computed."""
    assert relative_change(before, after) == expected


def test_with_unfinished_marks_missing_scenarios_skipped():
    """An interrupted run lists every chosen scenario: finished ones as they were."""
    from dispatcher.bench.runner import with_unfinished

    done = {"ceiling": ScenarioResult("ceiling", metrics={"requests_per_s": 1.0})}
    results = with_unfinished(("ceiling", "latency"), done, "interrupted")
    assert [r.name for r in results] == ["ceiling", "latency"]
    assert results[0] is done["ceiling"]
    assert (results[1].status, results[1].reason) == ("skipped", "interrupted")


# -- options ----------------------------------------------------------------------------


def test_defaults_are_the_issue_sizes():
    """Without flags every scenario runs at the sizes issue 6 names."""
    options = parse_options([])
    assert options.sizes == FULL
    assert (FULL.events, FULL.webhooks, FULL.rate, FULL.duration) == (100_000, 100, 1000.0, 30.0)
    assert (FULL.backlog_events, FULL.backlog_webhooks) == (1_000_000, 10_000)
    assert (FULL.fanout_rate, FULL.fanout_webhooks) == (20.0, 50)
    assert options.scenarios == (
        "ceiling",
        "throughput",
        "latency",
        "isolation",
        "backlog",
        "fanout",
        "options",
        "filters",
    )
    assert options.out is None and not options.quick


def test_quick_preset_with_overrides():
    """--quick picks the small preset; explicit flags still win."""
    options = parse_options(["--quick", "--events", "7_000", "--out", "x.json"])
    assert options.quick
    assert options.sizes.events == 7000
    assert options.sizes.webhooks == QUICK.webhooks
    assert options.out == Path("x.json")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,3", ("ceiling", "throughput", "latency")),
        ("3,1", ("ceiling", "latency")),  # always run in scenario order
        ("backlog, ceiling", ("ceiling", "backlog")),
        ("2,throughput", ("throughput",)),
    ],
)
def test_parse_scenarios(text, expected):
    """Scenarios are chosen by number or name and run in their natural order."""
    assert parse_scenarios(text) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--scenarios", "9"],
        ["--scenarios", ","],
        ["--events", "0"],
        ["--events", "many"],
        ["--rate", "-1"],
        ["--failing-fraction", "1"],
        ["--no-such-flag"],
        ["--compare", "one.json"],
    ],
)
def test_bad_arguments_raise_usage_error(argv):
    """A bad command line raises UsageError instead of exiting the process."""
    with pytest.raises(UsageError):
        parse_options(argv)


def test_compare_flag_takes_two_files():
    """--compare OLD NEW switches to comparing two results files."""
    assert parse_options(["--compare", "a.json", "b.json"]).compare == (
        Path("a.json"),
        Path("b.json"),
    )


# -- receiver parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        (b'{"data":{"sent_at":1700000000.25,"seq":7,"pad":"x"}}', b"sent_at", 1700000000.25),
        (b'{"data":{"sent_at":1700000000.25,"seq":7,"pad":"x"}}', b"seq", 7.0),
        (b'{"data":{"seq":12}}', b"seq", 12.0),
        (b'{"data":{"pad":"x"}}', b"seq", None),
        (b'{"data":{"seq":"x"}}', b"seq", None),
        (b'{"seq":1e3}', b"seq", 1000.0),
    ],
)
def test_number_after(body, key, expected):
    """The receiver reads numbers out of compact JSON without decoding it."""
    assert receiver.number_after(body, key) == expected


def test_header_value_is_case_insensitive_and_keeps_the_value():
    """Header names match in any case; the value keeps its own case."""
    head = b"POST /ok/w1 HTTP/1.1\r\nHost: x\r\nWebhook-Id: Msg_ABC\r\nContent-Length: 2"
    assert receiver.header_value(head, head.lower(), b"webhook-id") == b"Msg_ABC"
    assert receiver.header_value(head, head.lower(), b"content-length") == b"2"
    assert receiver.header_value(head, head.lower(), b"x-missing") is None


def test_recorder_counts_duplicates_and_order():
    """The recorder keeps one arrival per (path, id), and flags out-of-order sequences."""
    rec = receiver.Recorder()
    rec.record_ok(b"/ok/w1", b"a", b'{"data":{"sent_at":100.0,"seq":0}}', 100.5)
    rec.record_ok(b"/ok/w1", b"a", b'{"data":{"sent_at":100.0,"seq":0}}', 100.6)  # duplicate
    rec.record_ok(b"/ok/w1", b"c", b'{"data":{"sent_at":100.0,"seq":2}}', 100.7)
    rec.record_ok(b"/ok/w1", b"b", b'{"data":{"sent_at":100.0,"seq":1}}', 100.8)  # late
    rec.record_ok(b"/ok/w2", b"a", b'{"data":{"sent_at":100.0,"seq":0}}', 100.9)  # other hook
    result = rec.stats()
    assert result["unique_ok"] == 4
    assert result["duplicates"] == 1
    assert result["order_violations"] == 1
    assert list(rec.latencies) == pytest.approx([0.5, 0.7, 0.8, 0.9])


class _Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def _feed(mode: str, *chunks: bytes) -> tuple[receiver.Recorder, _Transport]:
    rec = receiver.Recorder()
    protocol = receiver.ReceiverProtocol(rec, mode)
    transport = _Transport()
    protocol.transport = transport  # type: ignore[assignment]
    for chunk in chunks:
        protocol.data_received(chunk)
    return rec, transport


def _request(path: bytes, body: bytes = b"{}", webhook_id: bytes = b"m1") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nwebhook-id: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        path,
        webhook_id,
        len(body),
        body,
    )


def test_protocol_answers_by_path_and_handles_split_packets():
    """The first path segment picks the answer; requests may arrive in pieces."""
    raw = _request(b"/ok/w1") + _request(b"/fail503/w2")
    rec, transport = _feed("ok", raw[:10], raw[10:50], raw[50:])
    assert transport.written.count(b"200 OK") == 1
    assert transport.written.count(b"503 Service Unavailable") == 1
    assert rec.by_mode == {"ok": 1, "fail503": 1, "hang": 0}


def test_protocol_hang_never_answers():
    """A hang endpoint never answers, even to later requests on the connection."""
    rec, transport = _feed("ok", _request(b"/hang/w1") + _request(b"/ok/w1"))
    assert transport.written == b""
    assert rec.by_mode["hang"] == 1


def test_protocol_default_mode_for_other_paths():
    """Paths without a mode segment get the receiver's --mode."""
    _, transport = _feed("fail503", _request(b"/webhook"))
    assert b"503" in transport.written


def test_protocol_control_stats():
    """GET /_stats answers the counters as JSON without counting itself."""
    _rec, transport = _feed("ok", _request(b"/ok/w1"), b"GET /_stats HTTP/1.1\r\nHost: x\r\n\r\n")
    body = transport.written.split(b"\r\n\r\n")[-1]
    assert orjson.loads(body)["requests"] == 1


def test_protocol_rejects_chunked_bodies():
    """Chunked requests are refused (the dispatcher always sends Content-Length)."""
    _, transport = _feed("ok", b"POST /ok/w1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert b"400" in transport.written and transport.closed


# -- workload, pipeline, stack ----------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "webhooks", "expected"), [(0, 20, (0, 0)), (19, 20, (19, 0)), (41, 20, (1, 2))]
)
def test_assignment_round_robin(index, webhooks, expected):
    """Events go round-robin to webhooks, numbered per webhook for the order check."""
    assert workload.assignment(index, webhooks) == expected


def test_event_data_leads_with_timestamp_and_sequence():
    """sent_at and seq come first in the data so the receiver finds them cheaply."""
    data = workload.event_data(3, "xx")
    assert list(data) == ["sent_at", "seq", "pad", "registration_id"]
    assert data["seq"] == 3


@pytest.mark.parametrize("size", [1024, 2048])
def test_pad_makes_bodies_the_requested_size(size):
    """The padding brings a delivered body to the requested size, within a few bytes.

    The event is shaped like the bench's (its topic, a current timestamp, a five-digit
    sequence number); only the float ``sent_at`` may print a few digits shorter."""
    data = workload.event_data(12_345, workload.pad_for(size))
    event = Event(str(uuid.uuid4()), BENCH_TOPIC, "ten_bench_1_1", int(time.time()), data)
    body = delivery_body(event, str(uuid.uuid4()), "v1.0")
    assert abs(len(body) - size) <= 8


@pytest.mark.parametrize(
    ("webhooks", "fraction", "fail503", "hang"),
    [(100, 0.1, 5, 5), (20, 0.1, 1, 1), (10, 0.0, 0, 0), (3, 0.5, 1, 1)],
)
def test_failing_modes(webhooks, fraction, fail503, hang):
    """A share of webhooks fails, half answering 503 and half hanging."""
    modes = pipeline.failing_modes(webhooks, fraction)
    assert len(modes) == webhooks
    assert (modes.count("fail503"), modes.count("hang")) == (fail503, hang)


def test_bench_database_url_keeps_the_server():
    """The bench database lives on the configured server under its own name."""
    url = bench_database_url("postgresql://u:p@db:5433/hooklane?sslmode=off", "20260101_1")
    assert url == "postgresql://u:p@db:5433/hooklane_bench_20260101_1?sslmode=off"


def test_webhook_url_encodes_mode_in_path():
    """Webhook URLs point at the loopback receiver with the mode as first segment."""
    assert webhook_url(8080, "hang", 3) == "http://127.0.0.1:8080/hang/w3"


def test_dispatcher_env_carries_the_bench_settings():
    """Router and deliverer get the bench's broker, database, prefix and key."""
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:5432/b",
        kafka_bootstrap_servers="127.0.0.1:9",
        topic_prefix="bench1.",
        secret_key="k",
    )
    env = dispatcher_env({"PATH": "/bin"}, settings, {"HOOKLANE_PARK_AFTER": "5s"})
    assert env["PATH"] == "/bin"
    assert env["HOOKLANE_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9"
    assert env["HOOKLANE_TOPIC_PREFIX"] == "bench1."
    assert env["HOOKLANE_ALLOW_PRIVATE_TARGETS"] == "true"
    assert env["HOOKLANE_PARK_AFTER"] == "5s"
    # What the children see must itself be valid settings.
    assert Settings.from_env(env).topic_prefix == "bench1."


def test_no_metrics_flag_is_parsed_and_recorded():
    """--no-metrics turns the services' metrics off, and the results say so."""
    assert parse_options([]).metrics is True
    options = parse_options(["--no-metrics"])
    assert options.metrics is False and options.to_dict()["metrics"] is False


@pytest.mark.parametrize("metrics", [True, False])
def test_router_and_deliverer_get_their_own_metrics_port_or_run_bare(tmp_path, metrics):
    """With metrics each child has its own ops port; without, both run the bare services."""
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:5432/b")
    stack = Stack(settings, tmp_path, "WARNING", metrics=metrics)
    router, deliverer, _env = stack.dispatcher(settings)
    if metrics:
        assert (router.module, deliverer.module) == (
            "dispatcher.router",
            "dispatcher.deliverer",
        )
        ports = {child.env["HOOKLANE_METRICS_PORT"] for child in (router, deliverer)}
        assert len(ports) == 2
    else:
        assert {router.module, deliverer.module} == {"dispatcher.bench.bare"}
        assert (list(router.args), list(deliverer.args)) == (["router"], ["deliverer"])


# -- /proc parsing, profiles, table, progress -------------------------------------------


def test_parse_cpu_seconds_survives_odd_command_names():
    """utime+stime are found after the last ')' even if the name has spaces and parens."""
    line = "42 (python (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0"
    assert procs.parse_cpu_seconds(line, ticks_per_second=100) == 3.0


def test_parse_status_kb():
    """VmRSS / VmHWM are read in kB."""
    text = "Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"
    assert procs.parse_status_kb(text, "VmRSS") == 1024
    assert procs.parse_status_kb(text, "VmHWM") == 2048
    assert procs.parse_status_kb(text, "VmSwap") is None


def test_top_frames_self_and_inclusive():
    """Self time counts innermost frames; inclusive counts our own frames once per stack."""
    collapsed = (
        "main (dispatcher/cli.py:1);run (dispatcher/w.py:5);send (aiohttp/c.py:9) 60\n"
        "main (dispatcher/cli.py:1);run (dispatcher/w.py:5);sign (dispatcher/s.py:3) 30\n"
        "main (dispatcher/cli.py:1);select (selectors.py:4) 10\n"
        "not a stack line\n"
    )
    top = profiling.top_frames(collapsed)
    assert top["self"][0] == ("send (aiohttp/c.py:9)", 60.0)
    assert top["inclusive"] == [
        ("run (dispatcher/w.py:5)", 90.0),
        ("sign (dispatcher/s.py:3)", 30.0),
    ]
    assert profiling.top_frames("") == {"self": [], "inclusive": []}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        (True, "yes"),
        (12345, "12,345"),
        (1234.5, "1,234"),
        (2.456, "2.46"),
        (0.1234, "0.123"),
    ],
)
def test_format_value(value, shown):
    """Table cells are short and readable."""
    assert report.format_value(value) == shown


def test_table_shows_figures_targets_and_skips():
    """The table lists headline figures with their verdicts and why a scenario skipped."""
    doc = _doc({"throughput": {"deliveries_per_s": 900.0, "ratio_to_ceiling": 0.5}})
    doc["scenarios"]["latency"] = ScenarioResult.skipped("latency", "no pipeline").to_dict()
    table = report.format_table(doc)
    assert "deliveries/s" in table and "900" in table
    assert ">= 1.00 MISSED" in table
    assert "SKIPPED" in table and "no pipeline" in table


def test_progress_render_and_sparse_log_output():
    """The bar shows share, counts and speed; outside a terminal it prints whole lines."""
    assert render("deliver", 50, 100, 2.0) == (
        "deliver [##############..............]  50%  50/100  25/s  2.0s"
    )
    ticks = iter([0.0, 1.0, 2.0, 3.0])
    stream = io.StringIO()
    bar = Progress("x", 10, stream=stream, clock=lambda: next(ticks))
    bar.update(5)  # first update draws
    bar.update(6)  # within 10 s: no line in a log
    bar.close()
    assert stream.getvalue().count("\n") == 2


@pytest.mark.parametrize(
    ("stage", "deliveries", "expected"),
    [
        ([(10.0, 10.02)], [(10.0, 10.05)], [0.03]),
        # The earliest time an event reached the stage counts (fan-out: many tasks).
        ([(10.0, 10.03), (10.0, 10.01)], [(10.0, 10.05), (10.0, 10.06)], [0.04, 0.05]),
        # The receiver's sent_at went through arrival - latency: matched within 5 µs.
        ([(1.7e9 + 0.123456, 1.7e9 + 0.2)], [(1.7e9 + 0.1234561, 1.7e9 + 0.3)], [0.1]),
        # Events the stage never saw, or 1 ms apart, are not matched.
        ([(10.0, 10.01)], [(10.001, 10.05), (11.0, 11.5)], []),
        ([], [(10.0, 10.05)], []),
    ],
)
def test_since_stage_matches_deliveries_to_their_event(stage, deliveries, expected):
    """Time since a stage is arrival minus the event's earliest time at that stage."""
    assert stats.since_stage(stage, deliveries) == pytest.approx(expected, abs=1e-6)


# -- the broker floor of (3) and (6) ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "floor", "met", "reachable"),
    [
        (12.0, 8.0, False, True),  # missed, but the broker alone allows it
        (42.0, 41.0, False, False),  # missed, and below what the broker alone reaches
        (9.0, 7.0, True, True),
        (12.0, None, False, None),  # no floor measured (--no-floor)
    ],
)
def test_p3_targets_carry_the_broker_floor(value, floor, met, reachable):
    """A P3 target says what the null pipeline reached and whether the goal is within it."""
    metrics = {"p50_ms": value}
    if floor is not None:
        metrics["broker_floor_p50_ms"] = floor
    entry = evaluate(TARGETS["latency"][0], metrics)
    assert (entry["met"], entry["floor"], entry["reachable"]) == (met, floor, reachable)


def test_targets_without_a_floor_have_no_floor_fields():
    """Only targets that name a floor metric report one (the schema stays as it was)."""
    entry = evaluate(TARGETS["throughput"][0], {"ratio_to_ceiling": 1.2})
    assert "floor" not in entry and "reachable" not in entry


@pytest.mark.parametrize(
    ("p50", "floor", "cell"),
    [
        (42.0, 41.0, "<= 10.00 MISSED (below this broker's floor)"),
        (12.0, 8.0, "<= 10.00 MISSED"),
        (9.0, 41.0, "<= 10.00 met"),
    ],
)
def test_table_marks_a_goal_below_the_broker_floor(p50, floor, cell):
    """The verdict says when the broker alone cannot reach the goal, and only then."""
    doc = _doc({"latency": {"p50_ms": p50, "broker_floor_p50_ms": floor}})
    row = next(line for line in report.format_table(doc).splitlines() if "p50 ms" in line)
    assert row.endswith(cell)
    assert "broker floor p50 ms" in report.format_table(doc)


def test_no_floor_flag_is_parsed_and_recorded():
    """--no-floor skips the null pipeline of (3) and (6), and the results say so."""
    assert parse_options([]).floor is True
    options = parse_options(["--no-floor"])
    assert options.floor is False and options.to_dict()["floor"] is False


@pytest.mark.parametrize(
    ("webhooks", "fanout", "tenants"), [(100, 1, 100), (50, 50, 1), (10, 3, 3), (1, 5, 1)]
)
def test_floor_tenants_are_the_scenarios(webhooks, fanout, tenants):
    """The null pipeline has as many tenants as the scenario: ``fanout`` webhooks each."""
    from dispatcher.bench.floor import tenant_ids

    ids = tenant_ids(webhooks, fanout)
    assert len(ids) == tenants == len(set(ids))


def test_floor_keys_one_per_webhook_of_the_tenant():
    from dispatcher.bench.floor import fanout_keys

    keys = fanout_keys("ten_a", 3)
    assert keys == [b"ten_a/0", b"ten_a/1", b"ten_a/2"]
    assert not set(keys) & set(fanout_keys("ten_b", 3))


@pytest.mark.parametrize(
    ("message", "tenant"),
    [
        (Event("e1", BENCH_TOPIC, "ten_x", 1, {"a": 1}).to_message(), "ten_x"),
        (b'{"id":"e1"}', None),
        (b'{"tenant_id":"', None),
    ],
)
def test_floor_reads_the_tenant_of_an_event_message(message, tenant):
    from dispatcher.bench.floor import tenant_of

    assert tenant_of(message) == tenant


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:4999"])
def test_spans_are_exported_by_the_children_only_with_tracing(tmp_path, monkeypatch, endpoint):
    """A developer's OTEL_* never reaches router and deliverer; --tracing exports every
    span to the bench's loopback sink (sampling 1.0)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:4318")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:5432/b")
    stack = Stack(settings, tmp_path, "WARNING", tracing_endpoint=endpoint)
    _router, _deliverer, env = stack.dispatcher(settings)
    otel = {name: value for name, value in env.items() if name.startswith("OTEL_")}
    if endpoint is None:
        assert otel == {}
    else:
        assert otel == {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "always_on"}
    assert parse_options(["--tracing"]).to_dict()["tracing"] is True
    assert parse_options([]).tracing is False


@pytest.mark.parametrize(
    ("argv", "brokers"),
    [
        ([], ("tansu", "kafka")),
        (["--broker", "both"], ("tansu", "kafka")),
        (["--broker", "kafka"], ("kafka",)),
        (["--broker", "tansu"], ("tansu",)),
    ],
)
def test_broker_option(argv: list[str], brokers: tuple[str, ...]) -> None:
    """Every chosen scenario runs on each named broker in turn (tansu first)."""
    assert parse_options(argv).brokers == brokers


def test_broker_option_refuses_unknown() -> None:
    with pytest.raises(UsageError, match="invalid choice"):
        parse_options(["--broker", "redpanda"])


@pytest.mark.parametrize(
    ("kind", "brokers", "name"),
    [("tansu", 2, "r.json"), ("kafka", 2, "r-kafka.json"), ("kafka", 1, "r.json")],
)
def test_out_path_per_broker(kind: str, brokers: int, name: str) -> None:
    """A run over both brokers writes Apache Kafka's figures beside tansu's."""
    from dispatcher.bench.runner import out_path

    assert out_path(Path("d/r.json"), kind, brokers) == Path("d", name)


def test_kafka_pass_without_java_says_why(monkeypatch, capsys):
    """No Java or Maven: the Apache Kafka pass is left out with the reason, and a run
    that asked for Apache Kafka alone fails."""
    from dispatcher.bench import runner

    monkeypatch.setattr(runner, "kafka_missing", lambda: "java is not installed")
    assert runner.main(["--broker", "kafka", "--scenarios", "ceiling"]) == 1
    assert "no Apache Kafka pass: java is not installed" in capsys.readouterr().err
