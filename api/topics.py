"""``GET /topics``: the topic catalog (name, description, JSON Schema of ``data``)."""

from __future__ import annotations

from aiohttp import web

from api.app_keys import POOL
from api.responses import json_response
from dispatcher.store.topic_store import list_topics


async def list_(request: web.Request) -> web.Response:
    """Every catalog topic, by name."""
    topics = await list_topics(request.app[POOL])
    return json_response(
        {
            "data": [
                {"name": topic.name, "description": topic.description, "schema": topic.schema}
                for topic in topics
            ]
        }
    )


def setup_routes(app: web.Application) -> None:
    """Register the catalog route."""
    app.router.add_get("/topics", list_, allow_head=False)
