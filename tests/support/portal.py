"""Helpers for the portal tests (no tests here): a cookie-keeping client and sign-in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import CookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from dispatcher.settings import Settings
from tests.conftest import TenantKey

Client = TestClient[web.Request, web.Application]
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@asynccontextmanager
async def portal_client(settings: Settings) -> AsyncIterator[Client]:
    """A client of the full app that keeps cookies (also those of 127.0.0.1)."""
    server = TestServer(create_app(settings))
    async with TestClient(server, cookie_jar=CookieJar(unsafe=True)) as client:
        yield client


async def portal_link(client: Client, tenant: TenantKey) -> str:
    """A fresh one-time link's path (``/portal/login/<token>``)."""
    response = await client.post("/portal/sessions", headers=tenant.headers)
    assert response.status == 201, await response.text()
    url: str = (await response.json())["url"]
    return url[url.index("/portal/") :]


async def sign_in(client: Client, tenant: TenantKey) -> str:
    """Open a link with ``client``; the session's CSRF token."""
    response = await client.get(await portal_link(client, tenant))
    assert response.status == 200
    return csrf_of(await (await client.get("/portal/webhooks")).text())


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)
