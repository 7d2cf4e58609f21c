"""Pure helpers of the API: date-times, cursors, timestamps, bearer parsing, problem lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from structlog.testing import capture_logs

from api.responses import decode_cursor, encode_cursor, rfc3339
from api.schemas import Schemas
from api.validation import compile_schema, parse_datetime, problems
from tests.support.api import Client, api_client


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31t12:00:00z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00.5+02:00", datetime(2026, 1, 31, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_parse_datetime_accepts_rfc3339(text, expected):
    """RFC 3339 date-times with Z or an offset parse to aware datetimes."""
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(
    "text", ["2026-01-31", "2026-01-31T12:00:00", "yesterday", "", "2026-13-01T00:00:00Z"]
)
def test_parse_datetime_rejects_the_rest(text):
    """Dates without time or offset, and non-dates, raise ValueError."""
    with pytest.raises(ValueError):
        parse_datetime(text)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000000Z"),
        (
            datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=1))),
            "2026-01-02T02:04:05.000007Z",
        ),
        (None, None),
    ],
)
def test_rfc3339_is_utc_with_microseconds(moment, text):
    """Timestamps render in UTC with a fixed width, so they also sort as strings."""
    assert rfc3339(moment) == text


@pytest.mark.parametrize("position", [["2026-01-02T03:04:05+00:00", "abc"], 42, {"a": [1]}])
def test_cursors_round_trip(position):
    """A cursor decodes to the position it encodes, and is URL-safe."""
    cursor = encode_cursor(position)
    assert decode_cursor(cursor) == position
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", "%%%"])
def test_garbage_cursors_raise_value_error(cursor):
    """A cursor that is not base64 of JSON raises ValueError (the API answers 400)."""
    with pytest.raises(ValueError):
        decode_cursor(cursor)


def test_problems_list_every_error_with_pointers():
    """Each violation becomes {path, message, keyword}; unknown fields are named one by one."""
    validator = compile_schema(Schemas().sources["webhook_create"])
    found = problems(validator, {"url": 1, "topics": [], "a": 1, "b": 2})
    assert [(p["path"], p["keyword"]) for p in found] == [
        ("/a", "additionalProperties"),
        ("/b", "additionalProperties"),
        ("/topics", "minItems"),
        ("/url", "type"),
    ]
    assert problems(validator, {"url": "https://x.test/", "topics": ["A.B"]}) == []


async def test_unexpected_errors_are_logged_without_frame_locals(settings, tenant, monkeypatch):
    """A crash is logged with a plain traceback string, never exc_info (whose locals could leak)."""
    import api.topics

    async def broken(executor):
        raise RuntimeError("boom")

    monkeypatch.setattr(api.topics, "list_topics", broken)
    client: Client
    async with api_client(settings) as client:
        with capture_logs() as logs:
            response = await client.get("/topics", headers=tenant.headers)
    assert response.status == 500
    [entry] = [e for e in logs if e["event"] == "api.unhandled_error"]
    assert "RuntimeError: boom" in entry["traceback"]
    assert "exc_info" not in entry
