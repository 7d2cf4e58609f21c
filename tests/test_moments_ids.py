"""The one moment parser (``since``/``until``) and the one UUID parser: table tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatcher.ids import parse_uuid
from dispatcher.moments import MAX_UNIX_SECONDS, parse_moment, utc

JAN31 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-01-31T12:00:00Z", JAN31),
        ("2026-01-31t12:00:00z", JAN31),
        ("2026-01-31T12:00Z", JAN31),
        (
            "2026-01-31T13:00:00+01:00",
            datetime(2026, 1, 31, 13, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("2026-01-31T12:00:00.250Z", JAN31 + timedelta(milliseconds=250)),
        (1769860800, JAN31),
        (1769860800.5, JAN31 + timedelta(milliseconds=500)),
        ("1769860800", JAN31),
        (" 1769860800 ", JAN31),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (MAX_UNIX_SECONDS, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_parse_moment_accepts_rfc3339_with_an_offset_and_unix_seconds(
    given: object, expected: datetime
) -> None:
    """Each documented form reads as the same aware instant."""
    parsed = parse_moment(given)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("2026-01-31T12:00:00", "needs a UTC offset"),  # a datetime-local value
        ("2026-01-31", "RFC 3339"),  # a date alone
        ("2026-01-31 12:00:00Z", "RFC 3339"),  # no T
        ("yesterday", "Invalid isoformat"),
        ("", "RFC 3339"),
        ("2026-13-31T12:00:00Z", "month"),
        (True, "expected"),
        (None, "expected"),
        (-1, "unix time"),
        (MAX_UNIX_SECONDS + 1, "unix time"),
        (float("nan"), "unix time"),
        (float("inf"), "unix time"),
        ("١٢٣", "RFC 3339"),  # digits, but not ASCII ones
    ],
)
def test_parse_moment_refuses_everything_else_with_a_reason(given: object, says: str) -> None:
    """Other forms are a ValueError whose message says what was wrong or expected."""
    with pytest.raises(ValueError, match=says):
        parse_moment(given)


def test_utc_is_the_aware_datetime_of_unix_seconds() -> None:
    """The one conversion from ``time.time()`` seconds to what Postgres stores."""
    assert utc(1769860800.25) == JAN31 + timedelta(milliseconds=250)
    assert utc(0).tzinfo is UTC


ID = uuid.UUID("0b7c2f4e-9d1a-4c55-8e0f-3a6b9c2d1e7f")


@pytest.mark.parametrize(
    "given",
    [
        "0b7c2f4e-9d1a-4c55-8e0f-3a6b9c2d1e7f",
        "0B7C2F4E-9D1A-4C55-8E0F-3A6B9C2D1E7F",
        "0b7c2f4e9d1a4c558e0f3a6b9c2d1e7f",
        "{0b7c2f4e-9d1a-4c55-8e0f-3a6b9c2d1e7f}",
        "urn:uuid:0b7c2f4e-9d1a-4c55-8e0f-3a6b9c2d1e7f",
    ],
)
def test_parse_uuid_reads_the_spellings_of_one_uuid(given: str) -> None:
    """Every spelling the standard library reads is the same id."""
    assert parse_uuid(given) == ID


@pytest.mark.parametrize(
    "given",
    [
        "",
        "not-a-uuid",
        "0b7c2f4e-9d1a-4c55-8e0f-3a6b9c2d1e7",
        "0b7c2f4e-9d1a-4c55-8e0f-3a6b9c2d1e7fz",
        None,
        42,
        b"0b7c2f4e9d1a4c558e0f3a6b9c2d1e7f",
        ID,
    ],
)
def test_parse_uuid_raises_value_error_for_anything_else(given: object) -> None:
    """One contract: ValueError (never TypeError or AttributeError) when it is not a UUID."""
    with pytest.raises(ValueError):
        parse_uuid(given)
