"""``/api-keys``: list, create and revoke the tenant's API keys (DESIGN.md §13).

A key is shown once, in the answer that creates it; lists show its ``prefix``. Revoking
(``DELETE``) takes effect at the next request, with every portal session and unused
portal link made with the key. A tenant may revoke the key it calls with; an operator
can always make a new one with ``hooklane keys create``.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web

from api.app_keys import POOL
from api.auth import api_key_id, tenant_id
from api.errors import not_found
from api.responses import json_response, rfc3339
from api.validation import read_json
from dispatcher.store import api_key_store as store

log = structlog.get_logger(__name__)

# What ``dispatcher.store.tenants`` issues; anything else is no key of anybody's.
KEY_ID = re.compile(r"^key_[0-9a-f]{32}$")


def api_key_json(key: store.ApiKey) -> dict[str, Any]:
    """The key object of every response (never the key itself)."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": rfc3339(key.created_at),
        "last_used_at": rfc3339(key.last_used_at),
        "revoked_at": rfc3339(key.revoked_at),
    }


async def list_(request: web.Request) -> web.Response:
    """GET /api-keys → ``{"data": [key, ...]}``, revoked keys included, oldest first."""
    keys = await store.list_api_keys(request.app[POOL], tenant_id(request))
    return json_response({"data": [api_key_json(key) for key in keys]})


async def create(request: web.Request) -> web.Response:
    """POST /api-keys ``{"name"}`` → 201 with the new key in ``key`` (shown once)."""
    body = await read_json(request, "api_key_create")
    key, secret = await store.create_api_key(request.app[POOL], tenant_id(request), body["name"])
    log.info("api_key.created", tenant_id=key.tenant_id, api_key_id=key.id, by=api_key_id(request))
    return json_response({**api_key_json(key), "key": secret}, status=201)


async def revoke(request: web.Request) -> web.Response:
    """DELETE /api-keys/{id} → 204: revoked at once, with its portal sessions and links."""
    wanted = request.match_info["id"]
    if not KEY_ID.match(wanted):
        raise not_found("API key")
    async with request.app[POOL].acquire() as conn:
        found = await store.revoke_api_key(conn, wanted, tenant_id(request))
    if not found:
        raise not_found("API key")
    log.info("api_key.revoked", tenant_id=tenant_id(request), api_key_id=wanted)
    return web.Response(status=204)


def setup_routes(app: web.Application) -> None:
    """Register the API key routes."""
    app.router.add_get("/api-keys", list_, allow_head=False)
    app.router.add_post("/api-keys", create)
    app.router.add_delete("/api-keys/{id}", revoke)
