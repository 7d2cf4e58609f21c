"""Long chaos scenarios (``make chaos``): every event arrives at least once.

Each scenario runs the router and deliverer as subprocesses against a broker of its
own, streams events to two webhooks, disrupts the stack at random moments (the seed is
in the scenario name, to replay it) and waits for every delivery. The table of
scenario, events, lost, duplicates and recovery time prints at the end of the run.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dispatcher.kafka.broker import LaunchedBroker
from dispatcher.settings import Settings
from tests.chaos.scenarios import (
    Failing,
    freeze_broker,
    kill_repeatedly,
    restart_database,
    run_scenario,
    scale_out_and_in,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
EVENTS = 400
RATE = 20.0
SCALE_WEBHOOKS = 200
SCALE_EVENTS = 100
SCALE_RATE = 4.0


def seeded() -> tuple[int, random.Random]:
    seed = random.randrange(1_000_000)
    return seed, random.Random(seed)


@pytest.mark.parametrize(
    ("label", "processes", "kills"),
    [
        ("deliverer", ["deliverer"], 4),
        ("router", ["router"], 4),
        ("router|deliverer", ["router", "deliverer"], 6),
    ],
    ids=["deliverer", "router", "both"],
)
async def test_kill_repeatedly(
    chaos_settings: Settings, tmp_path: Path, label: str, processes: list[str], kills: int
) -> None:
    """kill -9 the named processes (one chosen at random each time) mid-stream: nothing is lost."""
    seed, rng = seeded()
    await run_scenario(
        f"kill -9 {label} x{kills} (seed {seed})",
        chaos_settings,
        tmp_path,
        kill_repeatedly(processes, kills, rng),
        events=EVENTS,
        rate=RATE,
    )


@pytest.mark.parametrize(
    ("outages", "down_s", "between"),
    [(2, 5.0, (2.0, 4.0)), (25, 0.3, (0.1, 0.6))],
    ids=["down-5s-x2", "flapping"],
)
async def test_database_restarts(
    chaos_settings: Settings,
    tmp_path: Path,
    outages: int,
    down_s: float,
    between: tuple[float, float],
) -> None:
    """Postgres drops every connection and refuses new ones for ``down_s``, ``outages``
    times (flapping: many short outages, so connections die while idle in the pools and
    mid-statement): processes recover by themselves and nothing is lost."""
    seed, rng = seeded()
    await run_scenario(
        f"postgres down {down_s:g} s x{outages} (seed {seed})",
        chaos_settings,
        tmp_path,
        restart_database(chaos_settings, outages, down_s, rng, between),
        events=EVENTS,
        rate=RATE,
    )


async def test_broker_freeze(
    chaos_broker: LaunchedBroker, chaos_settings: Settings, tmp_path: Path
) -> None:
    """The broker is SIGSTOPped for 10 s then SIGCONTed: processes recover by themselves
    and nothing is lost."""
    seed, rng = seeded()
    await run_scenario(
        f"broker SIGSTOP 10 s (seed {seed})",
        chaos_settings,
        tmp_path,
        freeze_broker(chaos_broker, 10.0, rng),
        events=EVENTS,
        rate=RATE,
    )


async def test_scale_out_and_in(chaos_settings: Settings, tmp_path: Path) -> None:
    """200 webhooks, 10% failing until parked: deliverers go 1 -> 3 -> 1 and routers
    1 -> 2 -> 1; nothing is lost and every webhook first receives events in order."""
    seed, rng = seeded()
    settings = chaos_settings.replace(park_after=1.0)
    failing = Failing({f"hook{n}" for n in range(0, SCALE_WEBHOOKS, 10)})
    await run_scenario(
        f"scale 1-3-1 deliverers, 1-2-1 routers, {SCALE_WEBHOOKS} webhooks (seed {seed})",
        settings,
        tmp_path,
        scale_out_and_in(failing, rng),
        events=SCALE_EVENTS,
        rate=SCALE_RATE,
        webhooks=SCALE_WEBHOOKS,
        respond=failing.respond,
        ordered=True,
    )
