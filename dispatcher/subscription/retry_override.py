"""Per-webhook retry overrides (``retry`` on the webhook object), bounded by the operator.

A tenant may ask for its own schedule (``"1s,5s,1m"``) and retry window (``"1d"``),
within the operator's settings: no delay longer than the longest of
``HOOKLANE_RETRY_SCHEDULE``, no window longer than ``HOOKLANE_RETRY_WINDOW`` and at
most ``MAX_STEPS`` delays. So a tenant can retry less, or sooner, never more than the
operator pays for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dispatcher.durations import parse_duration, parse_schedule
from dispatcher.settings import Settings

MAX_STEPS = 50


@dataclass(frozen=True, slots=True)
class RetryOverride:
    """The parsed override; None fields fall back to the operator's settings."""

    schedule: tuple[float, ...] | None = None
    window: float | None = None


class InvalidRetry(ValueError):
    """An override outside the operator's bounds; ``path`` is its JSON pointer."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_retry(spec: Mapping[str, str] | None, settings: Settings) -> RetryOverride:
    """``{"schedule", "window"}`` (both optional) checked against ``settings``."""
    if not spec:
        return RetryOverride()
    schedule = None
    if "schedule" in spec:
        try:
            schedule = parse_schedule(spec["schedule"])
        except ValueError as exc:
            raise InvalidRetry("/schedule", str(exc)) from None
        longest = max(settings.retry_schedule)
        if len(schedule) > MAX_STEPS:
            raise InvalidRetry("/schedule", f"a schedule has at most {MAX_STEPS} delays")
        for delay in schedule:
            if delay <= 0:
                raise InvalidRetry("/schedule", "delays must be longer than 0")
            if delay > longest:
                raise InvalidRetry(
                    "/schedule",
                    f"delay {_human(delay)} is longer than this operator allows"
                    f" ({_human(longest)}, the longest of HOOKLANE_RETRY_SCHEDULE)",
                )
    window = None
    if "window" in spec:
        try:
            window = parse_duration(spec["window"])
        except ValueError as exc:
            raise InvalidRetry("/window", str(exc)) from None
        if not 0 < window <= settings.retry_window:
            raise InvalidRetry(
                "/window",
                f"the window must be longer than 0 and at most {_human(settings.retry_window)}"
                " (HOOKLANE_RETRY_WINDOW)",
            )
    return RetryOverride(schedule, window)


def stored_override(spec: Mapping[str, str] | None) -> RetryOverride:
    """The override as stored (checked by ``parse_retry`` when it was saved).

    Not checked against today's settings: ``policy.effective_policy`` bounds it by
    them, so an operator who shortens the schedule later still caps every webhook. A
    part that no longer parses (written around the API) falls back to the operator's.
    """
    if not spec:
        return RetryOverride()
    schedule = window = None
    try:
        schedule = parse_schedule(spec["schedule"]) if "schedule" in spec else None
    except (ValueError, TypeError, AttributeError):
        schedule = None
    try:
        window = parse_duration(spec["window"]) if "window" in spec else None
    except (ValueError, TypeError, AttributeError):
        window = None
    if schedule is not None and (not schedule or any(delay <= 0 for delay in schedule)):
        schedule = None
    if window is not None and window <= 0:
        window = None
    return RetryOverride(schedule, window)
