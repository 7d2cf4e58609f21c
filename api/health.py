"""``GET /healthz`` and ``GET /openapi.json``: the two routes that need no API key."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from api.app_keys import POOL, SCHEMAS
from api.errors import ApiError
from api.responses import json_response
from dispatcher.store.db import TRANSIENT_ERRORS

log = structlog.get_logger(__name__)

DB_CHECK_TIMEOUT_S = 2.0


async def health(request: web.Request) -> web.Response:
    """200 while the database answers a trivial query, else 503."""
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT_S):
            await request.app[POOL].fetchval("SELECT 1")
    except (TimeoutError, *TRANSIENT_ERRORS) as exc:
        log.warning("api.health_failed", error=str(exc) or type(exc).__name__)
        raise ApiError(503, "unavailable", "the database does not answer") from None
    return json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document, self-contained."""
    return web.Response(body=request.app[SCHEMAS].openapi_bundle, content_type="application/json")


def setup_routes(app: web.Application) -> None:
    """Register the public routes."""
    app.router.add_get("/healthz", health, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
