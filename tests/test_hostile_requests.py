"""The rest of issue 28's list of 500s: each is a 4xx now, with the envelope or a page.

The JSON bodies of the list (``name`` nested 1,000 levels, NUL in ``name``, in a filter
string and in an event id, ``data`` 400 levels deep in ``POST /events``) are in
tests/test_api_hostile_bodies.py; here: the test trigger's ``data``, the portal's
forms, path parameters, and the last line of defence for a NUL that reaches Postgres.
"""

from __future__ import annotations

from urllib.parse import urlencode

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.errors import error_middleware
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.api import TOPIC, api_client, webhook_body
from tests.support.portal import portal_client, sign_in
from tests.test_json_limits import deep_json

URL = "https://127.0.0.1:9/hook"


async def _webhook(client, tenant: TenantKey) -> str:
    response = await client.post("/webhooks", json=webhook_body(URL), headers=tenant.headers)
    assert response.status == 201, await response.text()
    webhook_id: str = (await response.json())["id"]
    return webhook_id


async def test_test_trigger_refuses_data_nested_400_levels(
    settings: Settings, tenant: TenantKey
) -> None:
    """POST /webhooks/test/trigger/:id with data 400 levels deep: 422 at /data/x."""
    async with api_client(settings) as client:
        webhook_id = await _webhook(client, tenant)
        response = await client.post(
            f"/webhooks/test/trigger/{webhook_id}",
            data=b'{"data":{"x":' + deep_json(400) + b"}}",
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert response.status == 422, await response.text()
        detail = (await response.json())["error"]["details"][0]
    assert detail["keyword"] == "too_deep" and detail["path"].startswith("/data/x")


@pytest.mark.parametrize("path", ["/api-keys/%00", "/api-keys/key_%00", "/api-keys/key_1"])
async def test_a_malformed_api_key_id_is_a_404(
    settings: Settings, tenant: TenantKey, path: str
) -> None:
    """An id no key can have (a NUL, a wrong shape) is an unknown id: 404."""
    async with api_client(settings) as client:
        response = await client.delete(path, headers=tenant.headers)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("route", "form"),
    [
        ("", {"url": URL, "topics": TOPIC, "name": "a\x00b"}),
        ("", {"url": URL + "\x00", "topics": TOPIC}),
        ("/{id}", {"url": URL, "topics": TOPIC, "name": "a\x00b"}),
        ("/{id}/state", {"state": "ENABLED\x00"}),
        ("/{id}/recover", {"since": "2026\x00"}),
        ("/{id}/test", {"note\x00": "x"}),
    ],
)
async def test_portal_forms_refuse_a_nul_with_a_page(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, route: str, form: dict[str, str]
) -> None:
    """A NUL in any field of any portal form: a 422 page naming the field; nothing stored."""
    async with portal_client(settings) as client:
        webhook_id = await _webhook(client, tenant)
        csrf = await sign_in(client, tenant)
        path = "/portal/webhooks" + route.format(id=webhook_id)
        response = await client.post(
            path,
            data=urlencode({**form, "csrf_token": csrf}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status == 422
        assert response.content_type == "text/html"
        assert "NUL character" in await response.text()
    names = await pool.fetch("SELECT name FROM webhooks WHERE tenant_id = $1", tenant.id)
    assert [row["name"] for row in names] == [None]  # only the webhook made above


async def test_a_nul_that_reaches_postgres_is_a_400_not_a_500() -> None:
    """The error middleware answers Postgres' refusal of a NUL with the envelope."""

    async def handler(request: web.Request) -> web.Response:
        raise asyncpg.CharacterNotInRepertoireError('invalid byte sequence for "UTF8": 0x00')

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/x", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/x")
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_character"
