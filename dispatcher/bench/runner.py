"""``hooklane bench``: run the chosen scenarios, write the results JSON, print the table."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from dispatcher.bench.options import BenchOptions, UsageError, parse_options
from dispatcher.bench.otlp_sink import OtlpSink
from dispatcher.bench.report import format_comparison, format_table
from dispatcher.bench.results import ScenarioResult, compare, document
from dispatcher.bench.stack import BENCH_JVM_OPTIONS, Receiver, Stack
from dispatcher.kafka.broker import embedded_settings
from dispatcher.runtime.supervisor import child_env
from dispatcher.settings import Settings, SettingsError

PIPELINE_MODULES = ("dispatcher.kafka.producer", "dispatcher.router", "dispatcher.deliverer")
BENCH_DIR = Path(".bench")
MIN_CEILING_REQUESTS = 20_000


def ceiling_requests(events: int) -> int:
    """Requests of (1): as many as (2) has deliveries, at least enough for a stable rate."""
    return max(events, MIN_CEILING_REQUESTS)


# Scenarios that need no router or deliverer.
IN_PROCESS = frozenset({"ceiling", "options", "filters"})


def missing_pipeline() -> list[str]:
    """The pipeline modules that are not importable in this tree."""
    return [name for name in PIPELINE_MODULES if importlib.util.find_spec(name) is None]


def default_out(now: dt.datetime) -> Path:
    """``.bench/<UTC timestamp>.json``."""
    return BENCH_DIR / (now.strftime("%Y%m%dT%H%M%SZ") + ".json")


def broker_info(settings: Settings, kind: str = "tansu") -> dict[str, Any]:
    """The broker's tuning the scenarios ran with (tansu: ``embedded_settings``)."""
    if kind == "kafka":
        return {
            "kind": "Apache Kafka, one KRaft node (full JIT)",
            "jvm_options": list(BENCH_JVM_OPTIONS),
            "topic_partitions": settings.topic_partitions,
            "deliveries_partitions": settings.deliveries_partitions,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        }
    tuned = embedded_settings(settings, os.environ)
    return {
        "kind": "embedded tansu (memory storage)",
        "topic_partitions": tuned.topic_partitions,
        "deliveries_partitions": tuned.deliveries_partitions,
        "fetch_max_wait_ms": tuned.fetch_max_wait_ms,
    }


def host_info() -> dict[str, Any]:
    """Where the figures were measured."""
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hooklane bench``: 0 if no scenario failed, 1 if one did, 130 if
    interrupted (Ctrl-C or SIGTERM; the figures measured so far are still written)."""
    try:
        options = parse_options(list(argv or []))
    except UsageError as exc:
        print(f"hooklane bench: {exc}", file=sys.stderr)
        return 2
    if options.compare is not None:
        return compare_files(*options.compare)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"hooklane bench: bad setting: {exc}", file=sys.stderr)
        return 2
    from dispatcher.logs import configure_logging

    # The harness's own info logs (database created, migrations) would break the bars.
    configure_logging(settings.replace(log_level="WARNING", log_format="console"))
    started = dt.datetime.now(dt.UTC)
    failed = False
    for kind in options.brokers:
        absent = kafka_missing() if kind == "kafka" else None
        if absent is not None:
            print(f"hooklane bench: no Apache Kafka pass: {absent}", file=sys.stderr)
            failed = failed or options.broker == "kafka"
            continue
        done: dict[str, ScenarioResult] = {}
        interrupted = False
        try:
            asyncio.run(run_all(options, settings, started, done, kind))
        except (KeyboardInterrupt, asyncio.CancelledError):
            # Ctrl-C or SIGTERM: the scenarios stopped their processes; keep the figures.
            print("\ninterrupted: writing the figures measured so far", file=sys.stderr)
            interrupted = True
        results = with_unfinished(options.scenarios, done, "interrupted before it finished")
        doc = document(
            results,
            started_at=started.isoformat(timespec="seconds"),
            finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            quick=options.quick,
            host={**host_info(), "broker": broker_info(settings, kind)},
            options={**options.to_dict(), "broker": kind},
        )
        out = out_path(options.out or default_out(started), kind, len(options.brokers))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"\n== broker: {doc['host']['broker']['kind']}")
        print(format_table(doc))
        print(f"\nresults: {out}")
        if interrupted:
            return 130
        failed = failed or any(result.status == "failed" for result in results)
    return 1 if failed else 0


def kafka_missing() -> str | None:
    """Why Apache Kafka cannot run here (no Java 17+, or no Maven to fetch it), else None."""
    from dispatcher.kafka.kafka_release import KafkaToolMissing, ensure_kafka

    try:
        ensure_kafka()
    except KafkaToolMissing as exc:
        return str(exc)
    return None


def out_path(out: Path, kind: str, brokers: int) -> Path:
    """The results file of one broker's pass: ``out`` itself, or ``<stem>-kafka.json`` for
    Apache Kafka's when the run covers both brokers."""
    return (
        out.with_name(f"{out.stem}-{kind}{out.suffix}") if brokers > 1 and kind != "tansu" else out
    )


def compare_files(old_path: Path, new_path: Path) -> int:
    """Print how the figures of ``new_path`` differ from ``old_path``."""
    try:
        old, new = (orjson.loads(path.read_bytes()) for path in (old_path, new_path))
        print(format_comparison(compare(old, new)))
    except (OSError, ValueError) as exc:
        print(f"hooklane bench --compare: {exc}", file=sys.stderr)
        return 2
    return 0


Scenario = Callable[[], Awaitable[ScenarioResult]]


def with_unfinished(
    chosen: Sequence[str], done: dict[str, ScenarioResult], reason: str
) -> list[ScenarioResult]:
    """The results in scenario order; chosen scenarios without one are skipped."""
    return [done.get(name) or ScenarioResult.skipped(name, reason) for name in chosen]


async def run_all(
    options: BenchOptions,
    settings: Settings,
    started: dt.datetime,
    results: dict[str, ScenarioResult],
    broker: str = "tansu",
) -> None:
    """Every chosen scenario in order on ``broker``, into ``results``; one failing never
    stops the others.

    ``results`` is filled as scenarios finish, so an interrupted run keeps the figures
    of those that did.
    """
    from dispatcher.bench import pipeline

    sizes = options.sizes
    log_dir = (options.out.parent if options.out else BENCH_DIR) / (
        "logs-" + started.strftime("%Y%m%dT%H%M%SZ") + ("" if broker == "tansu" else f"-{broker}")
    )
    sink = OtlpSink() if options.tracing else None
    if sink is not None:
        await sink.start()
    stack = Stack(
        settings,
        log_dir,
        options.log_level,
        metrics=options.metrics,
        tracing_endpoint=sink.endpoint if sink else None,
        broker=broker,
    )
    absent = missing_pipeline()
    # SIGTERM stops the run like Ctrl-C does: cancelled, every process stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        await stack.open()
        for name in options.scenarios:
            print(f"\n== {name}", file=sys.stderr)
            if name not in IN_PROCESS and absent:
                results[name] = ScenarioResult.skipped(
                    name, f"the pipeline is not in this tree yet ({', '.join(absent)} missing)"
                )
                continue
            runner: Scenario
            if name == "ceiling":
                runner = lambda: _ceiling(stack, ceiling_requests(sizes.events), sizes.webhooks)  # noqa: E731
            elif name == "options":
                runner = lambda: _options(options.quick)  # noqa: E731
            elif name == "filters":  # in process: no pipeline, no broker
                from dispatcher.bench.filter_cost import run_filter_cost

                runner = _in_thread(run_filter_cost)
            else:
                runner = pipeline.scenario(name, stack, options, results)
            results[name] = await _guarded(name, runner)
    finally:
        await stack.close(keep_database=options.keep)
        if sink is not None:
            await sink.stop()
            print(
                f"\nspans exported: {sink.requests} OTLP requests, {sink.bytes:,} bytes",
                file=sys.stderr,
            )


def _in_thread(measure: Callable[[], ScenarioResult]) -> Scenario:
    """A CPU-bound scenario as a coroutine function, off the event loop."""
    return lambda: asyncio.to_thread(measure)


async def _guarded(name: str, runner: Scenario) -> ScenarioResult:
    try:
        return await runner()
    except Exception as exc:  # one broken scenario must not hide the others' figures
        return ScenarioResult.failed(name, f"{type(exc).__name__}: {exc}")


async def _options(quick: bool) -> ScenarioResult:
    from dispatcher.bench.options_cost import run_options

    return await run_options(quick)


async def _ceiling(stack: Stack, requests: int, concurrency: int) -> ScenarioResult:
    from dispatcher.bench.ceiling import run_ceiling

    receiver = Receiver()
    await receiver.start(child_env(stack.settings), stack.log_dir)
    try:
        return await run_ceiling(stack.settings, receiver, requests, concurrency)
    finally:
        await receiver.stop()
