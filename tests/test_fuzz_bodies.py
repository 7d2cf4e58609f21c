"""Any body to any JSON route answers 2xx or 4xx with the error envelope, never a 5xx.

Schemathesis (tests/test_fuzz_api.py) fuzzes by the OpenAPI document; this fuzzes the
JSON reader itself (``api.validation.read_json``) with the hostile text of
``tests/support/fuzz_json.py``: nesting to and past the reader's limit, NUL and lone surrogate
escapes, huge numbers, duplicate and long keys, long strings, every field of the
right, wrong or no type, and bytes that are not JSON at all, under several content types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.api import TOPIC, Client, api_client
from tests.support.fuzz_json import json_text, scalars, strings
from tests.support.pipeline import ensure_mirror_topics

# {id}: the tenant's webhook (loopback port 9: a trigger fails fast, sends nothing).
ROUTES = (
    "/webhooks",
    "/webhooks/{id}",
    "/webhooks/test/trigger/{id}",
    "/webhooks/{id}/replay",
    "/webhooks/{id}/recover",
    "/events",
    "/api-keys",
)
FIELDS = (
    "url", "topics", "name", "state", "filter", "headers", "auth", "retry", "rate_limit",
    "secret", "topic", "data", "id", "since", "until", "request_id", "tenant_id",
)  # fmt: skip
CONTENT_TYPES = (
    "application/json",
    "application/json",
    "application/merge-patch+json",
    "text/plain",
)


def _object(members: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f'"{name}":{value}' for name, value in members) + "}"


# Objects naming the routes' own fields (so the schema checks run), or any JSON at all.
BODIES = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(FIELDS), st.one_of(scalars(), strings(), json_text(4))),
        max_size=5,
    ).map(_object),
    json_text(),
).map(lambda text: text.encode("utf-8", "surrogatepass")) | st.binary(max_size=300)


@pytest.fixture
async def client(settings: Settings, tenant: TenantKey) -> AsyncIterator[tuple[Client, str]]:
    await ensure_mirror_topics(settings, [TOPIC])
    async with api_client(settings) as running:
        body = {"url": "http://127.0.0.1:9/hook", "topics": [TOPIC]}
        created = await running.post("/webhooks", json=body, headers=tenant.headers)
        assert created.status == 201, await created.text()
        yield running, (await created.json())["id"]


@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(st.sampled_from(ROUTES), BODIES, st.sampled_from(CONTENT_TYPES))
async def test_any_body_gets_an_answer_not_an_error(
    client: tuple[Client, str], tenant: TenantKey, route: str, body: bytes, content_type: str
) -> None:
    """2xx, or 4xx with ``{"error": {"code", "message", "details"}}``: never a 5xx."""
    running, webhook_id = client
    headers = {**tenant.headers, "Content-Type": content_type}
    response = await running.post(route.format(id=webhook_id), data=body, headers=headers)
    assert response.status < 500, (route, body[:300], await response.text())
    event(f"{route} {response.status}")
    if response.status >= 400:
        error = (await response.json())["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
        assert "details" in error
