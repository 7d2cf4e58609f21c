"""Optional py-spy profiles of router and deliverer during a scenario (``--profile DIR``).

py-spy samples another process from outside (root or ptrace rights needed) and writes
collapsed stacks (``--format raw``); ``top_frames`` turns them into the table of the
hottest functions that docs/BENCHMARKS.md and the report quote. Profiling perturbs the
figures on a 2-core machine: profile in a run of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.bench.procs import Child

SAMPLE_RATE = 200
# Frames every stack of a process has: not worth listing.
ENTRY_POINTS = ("dispatcher/cli.py", "__main__.py", "<module>")


def top_frames(
    collapsed: str, limit: int = 15, own_code: str = "dispatcher/"
) -> dict[str, list[tuple[str, float]]]:
    """The hottest frames of collapsed stacks (``a;b;c 42`` per line), in % of samples.

    ``self`` counts the innermost frame of each stack (where the CPU was, any code);
    ``inclusive`` counts, once per stack, every frame of our own code (``own_code`` in
    its location) below the process's entry point: what each of our functions and its
    callees cost, which is what one can act on.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if own_code in frame and not any(entry in frame for entry in ENTRY_POINTS):
                inclusive[frame] += count
    if total == 0:
        return {"self": [], "inclusive": []}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(limit)]

    return {"self": share(own), "inclusive": share(inclusive)}


@dataclass
class Recording:
    """One running py-spy and the file it writes."""

    child: Child
    process: asyncio.subprocess.Process
    path: Path


async def start(
    directory: Path | None, scenario: str, children: Sequence[Child]
) -> list[Recording]:
    """Start py-spy on each child (nothing when ``directory`` is None)."""
    if directory is None:
        return []
    # Installed next to this interpreter (the venv's bin/), which need not be on PATH.
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if binary is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy, in the dev extra)")
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    recordings = []
    for child in children:
        path = directory / f"{scenario}-{child.name}.txt"
        process = await asyncio.create_subprocess_exec(
            binary,
            "record",
            "--pid",
            str(child.pid),
            "--rate",
            str(SAMPLE_RATE),
            "--format",
            "raw",
            "--nonblocking",  # never pause the target: less perturbation, some torn stacks
            "--output",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        recordings.append(Recording(child, process, path))
    return recordings


async def finish(recordings: list[Recording]) -> dict[str, Any]:
    """Stop every recording and summarise it: ``{child: {"file", "top"}}``."""
    summary: dict[str, Any] = {}
    for recording in recordings:
        with contextlib.suppress(ProcessLookupError):
            recording.process.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recording.process.wait(), 30)
        if recording.path.exists():
            summary[recording.child.name] = {
                "file": str(recording.path),
                "top": top_frames(recording.path.read_text(errors="replace")),
            }
    return summary
