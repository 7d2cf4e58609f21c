"""Hostile HTTP bodies get a 4xx envelope, never a 500, and the API keeps serving.

(The plain cases — bad JSON, wrong types, 413 with Content-Length, 415 — are in
test_api_errors.py; these are the nastier shapes.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.api import Client, api_client, webhook_body

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with api_client(settings) as running:
        yield running


async def _chunks(total: int, size: int = 65536) -> AsyncIterator[bytes]:
    yield b'{"url": "http://127.0.0.1:9/hook", "topics": ["NEXUS.THRESHOLD.STATE.ALERT"], "name": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


@pytest.mark.parametrize("path", ["/webhooks", "/events"])
async def test_chunked_body_over_the_limit_is_413(
    client: Client, tenant: TenantKey, path: str
) -> None:
    """A 4 MiB body streamed without Content-Length is cut off with 413."""
    response = await client.post(
        path, data=_chunks(4 * 1024 * 1024), headers={**tenant.headers, **JSON}
    )
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("case", "raw"),
    [
        ("nested 10000 deep", b'{"url":' + b"[" * 10000 + b"]" * 10000 + b"}"),
        ("number beyond double", b'{"url": "https://8.8.8.8/", "topics": [], "name": 1e400}'),
        ("integer beyond 64 bits", b'{"max_in_flight": 1' + b"0" * 40 + b"}"),
        ("lone surrogate", b'{"url": "https://8.8.8.8/\\ud800", "topics": ["X"]}'),
        ("NUL in a string", b'{"url": "https://8.8.8.8/\\u0000", "topics": ["X"]}'),
        ("duplicate keys", b'{"url": 1, "url": "https://8.8.8.8/", "topics": ["X"]}'),
        ("huge key count", b"{" + b",".join(b'"k%d": 1' % i for i in range(50000)) + b"}"),
    ],
)
async def test_hostile_json_is_a_client_error(
    client: Client, tenant: TenantKey, case: str, raw: bytes
) -> None:
    """Pathological JSON answers 400/413/422 with the error envelope."""
    response = await client.post("/webhooks", data=raw, headers={**tenant.headers, **JSON})
    assert 400 <= response.status < 500, (case, response.status, await response.text())
    assert "error" in await response.json()


@pytest.mark.parametrize(
    "field",
    [
        {"name": "x" * 100_000},
        {"topics": ["REGISTRATIONS.NEW.SUCCEEDED"] * 10_000},
        {"url": "https://8.8.8.8/" + "a" * 5000},
        {"secret": "s" * 100_000},
        {"max_in_flight": 10**9, "ordering": "unordered"},
        {"api_version": "v99"},
    ],
)
async def test_huge_or_unknown_values_are_rejected(
    client: Client, tenant: TenantKey, field: dict[str, object]
) -> None:
    """Oversized or out-of-range field values answer 422, not 500."""
    response = await client.post(
        "/webhooks", json=webhook_body("http://127.0.0.1:9/hook", **field), headers=tenant.headers
    )
    assert response.status == 422, (field.keys(), response.status, await response.text())


async def test_api_still_serves_after_hostile_input(client: Client, tenant: TenantKey) -> None:
    """After a hostile request, ordinary requests still succeed."""
    await client.post("/webhooks", data=b"[" * 100000, headers={**tenant.headers, **JSON})
    response = await client.post(
        "/webhooks", json=webhook_body("http://127.0.0.1:9/hook"), headers=tenant.headers
    )
    assert response.status == 201
