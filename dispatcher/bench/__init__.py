"""The benchmark suite behind ``hooklane bench`` (issue 6); see docs/BENCHMARKS.md.

Scenarios: (1) ceiling, (2) throughput, (3) latency, (4) isolation, (5) backlog.
Every headline figure is a ratio measured within the same run.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """``hooklane bench``; imported lazily so the receiver process starts light."""
    from dispatcher.bench.runner import main as run

    return run(argv)
