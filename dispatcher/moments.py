"""Moments in time as Hooklane reads and stores them: one parser, one conversion.

``parse_datetime`` reads an RFC 3339 date-time (the ``date-time`` format of the topic
schemas and request bodies). ``parse_moment`` is the one reader of a moment a person
or a client gives (``since`` and ``until`` of the API, the portal's "Recover since…"),
built on it. It accepts exactly:

- an RFC 3339 date-time with ``T`` and a UTC offset or ``Z``
  (``2026-01-31T12:00:00Z``, ``2026-01-31T13:00:00.5+01:00``; ``t`` and ``z`` too);
- unix seconds, as a number or a string of digits (``1769860800``), from 0 through
  9999-12-31T23:59:59Z.

Anything else (a date alone, a date-time without an offset, a boolean, NaN) is a
ValueError whose message says what is expected. ``utc`` turns the unix seconds the
pipeline keeps (``time.time()``) into the aware datetimes Postgres stores.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

MAX_UNIX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
EXPECTED = "an RFC 3339 date-time with an offset (e.g. 2026-01-31T12:00:00Z) or unix seconds"


def utc(seconds: float) -> datetime:
    """The aware UTC datetime of unix ``seconds``."""
    return datetime.fromtimestamp(seconds, UTC)


def parse_moment(value: object) -> datetime:
    """An aware datetime from ``value`` (see the module docstring); ValueError otherwise."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value <= MAX_UNIX_SECONDS:
            raise ValueError(f"{value!r} is not a unix time from 1970 through 9999")
        return utc(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {EXPECTED}")
    return parse_datetime(value)


def parse_datetime(value: str) -> datetime:
    """An RFC 3339 date-time (with ``T`` and a UTC offset or ``Z``); ValueError otherwise."""
    if "T" not in value.upper():
        raise ValueError("expected an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
    moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("the date-time needs a UTC offset or Z")
    return moment
