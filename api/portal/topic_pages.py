"""The portal's topic catalog: each topic's description, JSON Schema and example payload."""

from __future__ import annotations

import orjson
from aiohttp import web

from api.app_keys import POOL
from api.portal.pages import render
from dispatcher.store.topic_store import list_topics


def _pretty(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


async def catalog(request: web.Request) -> web.Response:
    """GET /portal/topics."""
    topics = await list_topics(request.app[POOL])
    entries = [
        {
            "name": topic.name,
            "description": topic.description,
            "schema": _pretty(topic.schema),
            "example": _pretty(topic.example()),
        }
        for topic in topics
    ]
    return render(request, "topics.html", {"topics": entries})


def setup_routes(app: web.Application) -> None:
    """Register the catalog page."""
    app.router.add_get("/portal/topics", catalog, allow_head=False)
