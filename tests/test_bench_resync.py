"""The resync benchmark runs end to end (its numbers are reported, never asserted)."""

from __future__ import annotations

from dispatcher.bench.resync import run
from dispatcher.settings import Settings


async def test_resync_bench_measures_every_phase(settings: Settings) -> None:
    """Each phase collects delivery and lookup samples; the cleared cache reloads on demand."""
    phases = await run(settings, webhooks=50, seconds=0.3, concurrency=2)
    assert [p.name for p in phases] == [
        "steady",
        "resync, nothing changed",
        "resync, all changed",
        "steady again",
        "cleared cache (old resync)",
    ]
    assert all(p.deliveries and len(p.lookups) == len(p.deliveries) for p in phases)
