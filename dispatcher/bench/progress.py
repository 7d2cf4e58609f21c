"""A tiny progress bar on stderr: redrawn in place on a terminal, sparse lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 28


def render(label: str, done: int, total: int, elapsed: float) -> str:
    """One progress line: ``label [#####.....]  45%  4,500/10,000  1,234/s  3.6s``."""
    fraction = min(1.0, done / total) if total > 0 else 0.0
    filled = int(fraction * WIDTH)
    speed = f"{done / elapsed:,.0f}/s" if elapsed > 0 else "-"
    return (
        f"{label} [{'#' * filled}{'.' * (WIDTH - filled)}] {fraction * 100:3.0f}%"
        f"  {done:,}/{total:,}  {speed}  {elapsed:.1f}s"
    )


class Progress:
    """Shows how far a phase got; ``update(done)`` is cheap to call often."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._interactive = self.stream.isatty()
        # Redraw 10x/s in a terminal; in a log, one line every 10 s.
        self._every = 0.1 if self._interactive else 10.0
        self._last_draw = -1e9

    def update(self, done: int) -> None:
        """Record progress and redraw when due."""
        self.done = done
        now = self.clock()
        if now - self._last_draw >= self._every:
            self._last_draw = now
            self._draw(now, final=False)

    def close(self, note: str = "") -> None:
        """Draw the final state on its own line."""
        self._draw(self.clock(), final=True, note=note)

    def _draw(self, now: float, final: bool, note: str = "") -> None:
        line = render(self.label, self.done, self.total, now - self.started)
        if note:
            line += f"  {note}"
        if self._interactive:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
