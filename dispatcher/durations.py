"""Parse human durations such as ``500ms``, ``10s``, ``5m``, ``2h``, ``3d``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; a bare number is seconds. Raises ValueError when malformed."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 500ms, 10s, 5m, 2h, 3d)")
    value, unit = match.groups()
    return float(value) * _UNITS[unit or "s"]


def parse_schedule(text: str) -> tuple[float, ...]:
    """A comma-separated list of durations, e.g. ``1s,5s,30s,5m,2h``; must be non-empty."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("the schedule is empty")
    return tuple(parse_duration(part) for part in parts)
