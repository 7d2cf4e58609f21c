"""HOOKLANE_EVENT_LOOP selects the loop the processes run on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dispatcher.runtime.event_loop import loop_factory
from dispatcher.settings import SettingsError

# What an entry point does: read the settings, then run its body on the chosen loop.
PRINT_LOOP = """
import asyncio
from dispatcher.runtime import event_loop
from dispatcher.settings import Settings

async def loop_class() -> str:
    return type(asyncio.get_running_loop()).__module__

print(event_loop.run(loop_class(), Settings.from_env().event_loop))
"""


@pytest.mark.parametrize(
    ("setting", "module"),
    [
        ("auto", "uvloop"),
        ("uvloop", "uvloop"),
        ("asyncio", "asyncio.unix_events"),
        (None, "uvloop"),
    ],
)
def test_the_setting_selects_the_loop_in_a_process(setting: str | None, module: str) -> None:
    """A process started with HOOKLANE_EVENT_LOOP=X runs on X's loop (uvloop by default)."""
    env = {k: v for k, v in os.environ.items() if k != "HOOKLANE_EVENT_LOOP"}
    if setting is not None:
        env["HOOKLANE_EVENT_LOOP"] = setting
    out = subprocess.run(
        [sys.executable, "-c", PRINT_LOOP], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == module


def test_an_unknown_loop_is_a_settings_error() -> None:
    """A loop name the factory does not know is refused with the setting's name."""
    with pytest.raises(SettingsError, match="HOOKLANE_EVENT_LOOP"):
        loop_factory("trio")


def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    """Long-running processes collect the young generation every 50,000 allocations, with
    what start-up allocated frozen out of the collector's view."""
    import gc

    from dispatcher.runtime.event_loop import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
