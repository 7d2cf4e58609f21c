"""The short chaos case that runs in ``make test``: one kill -9 of the deliverer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dispatcher.settings import Settings
from tests.chaos.scenarios import kill_repeatedly, run_scenario


@pytest.mark.timeout(300)
async def test_deliverer_kill9_loses_nothing(chaos_settings: Settings, tmp_path: Path) -> None:
    """A deliverer SIGKILLed mid-stream and restarted delivers every event at least once."""
    seed = random.randrange(1_000_000)
    outcome = await run_scenario(
        f"kill -9 deliverer x1 (seed {seed})",
        chaos_settings,
        tmp_path,
        kill_repeatedly(["deliverer"], 1, random.Random(seed), between=(0.5, 2.0)),
        events=200,
        rate=20.0,
    )
    assert outcome.disruptions == 1
