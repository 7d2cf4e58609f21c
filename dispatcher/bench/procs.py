"""Child processes of a benchmark: spawn them, read their CPU time and memory, stop them.

CPU and memory come straight from ``/proc`` (Linux), which avoids a dependency for
two numbers: user+system CPU seconds (``/proc/<pid>/stat`` fields 14-15) and the
resident set size (``VmRSS``) and its peak (``VmHWM``) from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dispatcher.parent_death import die_with_parent

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpu_seconds(stat_line: str, ticks_per_second: int = CLOCK_TICKS) -> float:
    """user+system CPU seconds from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may contain spaces and parentheses, so fields are
    counted after its closing parenthesis: utime and stime are the 12th and 13th.
    """
    fields = stat_line[stat_line.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def parse_status_kb(status_text: str, key: str) -> int | None:
    """A ``kB`` value (``VmRSS``, ``VmHWM``) from the text of ``/proc/<pid>/status``."""
    for line in status_text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """user+system CPU seconds of a running process, None once it is gone."""
    try:
        return parse_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None


def memory_kb(pid: int) -> tuple[int | None, int | None]:
    """(current RSS, peak RSS) in kB, or Nones once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None, None
    return parse_status_kb(text, "VmRSS"), parse_status_kb(text, "VmHWM")


@dataclass
class Child:
    """A Python module running as a child process, its output in a log file."""

    name: str
    module: str
    args: Sequence[str] = ()
    # Added to the environment it is started with (e.g. its own metrics port).
    env: Mapping[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    peak_rss_kb: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The child's process id (it must be started)."""
        assert self.process is not None, f"{self.name} is not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.returncode is None

    async def start(self, env: Mapping[str, str], log_dir: Path, stdout_pipe: bool = False) -> None:
        """Start ``python -m module args`` with ``env``; stderr goes to a log file."""
        await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        self._log = self.log_path.open("ab")
        # In a session of its own (Ctrl-C is for the bench, which stops it), and killed by
        # the kernel if the bench dies without stopping it (dispatcher.parent_death).
        self.process = await asyncio.create_subprocess_exec(
            *die_with_parent([sys.executable, "-m", self.module, *self.args]),
            env={**env, **self.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def cpu(self) -> float:
        """CPU seconds used so far (0 when unknown)."""
        if not self.running:
            return 0.0
        return cpu_seconds(self.pid) or 0.0

    def sample_memory(self) -> int | None:
        """Current RSS in kB; also tracks the peak (VmHWM) seen so far."""
        if not self.running:
            return None
        rss, peak = memory_kb(self.pid)
        self.peak_rss_kb = max(self.peak_rss_kb, peak or 0, rss or 0)
        return rss

    def pause(self) -> None:
        """SIGSTOP the child."""
        if self.running:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the child."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's log (for failure reports)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a paused child cannot exit
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode if process is not None else None


async def wait_idle(
    children: Sequence[Child],
    *,
    settle: float = 2.0,
    window: float = 0.5,
    idle_share: float = 0.03,
    within_s: float = 30.0,
) -> bool:
    """Wait until every child is alive and nearly idle (startup and group join done).

    True when all children used less than ``idle_share`` of a core over ``window``
    seconds, at least ``settle`` seconds after the call; False after ``within_s`` seconds.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(settle)
    while loop.time() - started < within_s:
        before = [child.cpu() for child in children]
        await asyncio.sleep(window)
        if not all(child.running for child in children):
            return False
        used = [child.cpu() - b for child, b in zip(children, before, strict=True)]
        if all(u <= idle_share * window for u in used):
            return True
    return False
