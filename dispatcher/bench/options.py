"""``hooklane bench`` arguments: full defaults from issue 6, a ``--quick`` preset, overrides.

Pure: ``parse_options(argv)`` returns a frozen ``BenchOptions`` or raises
``UsageError`` (argparse exits are turned into exceptions so callers and tests keep
control).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.bench.results import SCENARIOS

BROKERS = ("tansu", "kafka")


class UsageError(ValueError):
    """The command line cannot be understood; the message says why."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is."""

    events: int  # (1) requests, (2)/(4) events, one delivery each
    webhooks: int  # (1) concurrency, (2)-(4) ordered webhooks
    rate: float  # (3) events per second
    duration: float  # (3) seconds of publishing
    backlog_events: int  # (5)
    backlog_webhooks: int  # (5)
    down: float  # (5) seconds the receiver stays down once everything is routed
    fanout_rate: float = 20.0  # (6) events per second, each to every webhook
    fanout_webhooks: int = 50  # (6) webhooks of the one tenant


FULL = Sizes(
    events=100_000,
    webhooks=100,
    rate=1_000.0,
    duration=30.0,
    backlog_events=1_000_000,
    backlog_webhooks=10_000,
    down=10.0,
)
QUICK = Sizes(
    events=5_000,
    webhooks=20,
    rate=200.0,
    duration=10.0,
    backlog_events=30_000,
    backlog_webhooks=1_000,
    down=3.0,
)


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Everything one ``hooklane bench`` run needs to know."""

    sizes: Sizes
    scenarios: tuple[str, ...] = SCENARIOS
    quick: bool = False
    out: Path | None = None
    failing_fraction: float = 0.1
    timeout: float | None = None  # per scenario wait; None: derived from the sizes
    log_level: str = "WARNING"
    profile: Path | None = None  # py-spy flame graphs of router/deliverer in (2)
    keep: bool = False  # keep the database and the process logs
    metrics: bool = True  # False: router and deliverer without metrics (their cost)
    floor: bool = True  # False: (3) and (6) without their broker floor (dispatcher.bench.floor)
    tracing: bool = False  # True: spans exported (sampling 1.0) to a loopback OTLP sink
    compare: tuple[Path, Path] | None = None
    broker: str = "both"  # "tansu", "kafka" (one Apache Kafka node) or "both", in turn

    @property
    def brokers(self) -> tuple[str, ...]:
        """The brokers to run every chosen scenario on, in order."""
        return BROKERS if self.broker == "both" else (self.broker,)

    def to_dict(self) -> dict[str, object]:
        """The options as recorded in the results document."""
        return {
            **dataclasses.asdict(self.sizes),
            "scenarios": list(self.scenarios),
            "quick": self.quick,
            "failing_fraction": self.failing_fraction,
            "timeout": self.timeout,
            "log_level": self.log_level,
            "metrics": self.metrics,
            "floor": self.floor,
            "tracing": self.tracing,
            "broker": self.broker,
        }


def parse_scenarios(text: str) -> tuple[str, ...]:
    """``"1,3"`` or ``"ceiling,latency"`` → scenario names in run order, no repeats."""
    chosen: set[str] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit() and 1 <= int(part) <= len(SCENARIOS):
            chosen.add(SCENARIOS[int(part) - 1])
        elif part in SCENARIOS:
            chosen.add(part)
        else:
            raise UsageError(
                f"unknown scenario {part!r}: use 1-{len(SCENARIOS)} or {', '.join(SCENARIOS)}"
            )
    if not chosen:
        raise UsageError("--scenarios names no scenario")
    return tuple(name for name in SCENARIOS if name in chosen)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``hooklane bench`` argument parser."""
    parser = _Parser(
        prog="hooklane bench",
        description="Benchmark Hooklane against the raw HTTP ceiling on this machine.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    parser.add_argument("--events", type=_positive_int, help="events of (1), (2) and (4)")
    parser.add_argument("--webhooks", type=_positive_int, help="ordered webhooks (concurrency)")
    parser.add_argument("--rate", type=_positive_float, help="(3) events per second")
    parser.add_argument("--duration", type=_positive_float, help="(3) seconds of publishing")
    parser.add_argument("--backlog-events", type=_positive_int, help="(5) queued events")
    parser.add_argument("--backlog-webhooks", type=_positive_int, help="(5) webhooks")
    parser.add_argument("--down", type=_non_negative_float, help="(5) extra seconds down")
    parser.add_argument("--fanout-rate", type=_positive_float, help="(6) events per second")
    parser.add_argument("--fanout-webhooks", type=_positive_int, help="(6) webhooks per event")
    parser.add_argument(
        "--scenarios", type=_scenarios, default=SCENARIOS, help="e.g. 1,2,3 (default: all)"
    )
    parser.add_argument("--out", type=Path, help="results JSON (default .bench/<time>.json)")
    parser.add_argument(
        "--failing-fraction", type=_fraction, default=0.1, help="(4) share of failing webhooks"
    )
    parser.add_argument("--timeout", type=_positive_float, help="seconds to wait per scenario")
    parser.add_argument("--log-level", default="WARNING", help="log level of router/deliverer")
    parser.add_argument("--profile", type=Path, help="directory for py-spy flame graphs of (2)")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    parser.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="run router and deliverer without metrics, to measure what they cost",
    )
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip the broker floor of (3) and (6): the same shape through a null pipeline",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="export every span (sampling 1.0) to a loopback OTLP sink, to measure its cost",
    )
    parser.add_argument(
        "--broker",
        choices=(*BROKERS, "both"),
        default="both",
        help="the embedded tansu, one Apache Kafka node, or both in turn (default)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("OLD", "NEW"),
        help="compare two results files instead of running",
    )
    return parser


def parse_options(argv: Sequence[str]) -> BenchOptions:
    """The options of one run; UsageError for a bad command line."""
    args = build_parser().parse_args(list(argv))
    preset = QUICK if args.quick else FULL
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Sizes)
        if getattr(args, field.name) is not None
    }
    return BenchOptions(
        sizes=dataclasses.replace(preset, **overrides),
        scenarios=args.scenarios,
        quick=args.quick,
        out=args.out,
        failing_fraction=args.failing_fraction,
        timeout=args.timeout,
        log_level=args.log_level.upper(),
        profile=args.profile,
        keep=args.keep,
        metrics=args.metrics,
        floor=args.floor,
        tracing=args.tracing,
        compare=tuple(args.compare) if args.compare else None,
        broker=args.broker,
    )


def _scenarios(raw: str) -> tuple[str, ...]:
    try:
        return parse_scenarios(raw)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(raw: str) -> int:
    value = int(raw.replace("_", "").replace(",", ""))
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be within [0, 1)")
    return value
