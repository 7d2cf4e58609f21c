"""Request bodies: read, parse and validate against the JSON Schemas in ``schemas/``.

Every ``schemas/<name>.json`` except the OpenAPI document is compiled once into a
validator (``api.schemas.Schemas``, held by the app). ``read_json`` maps each way a
body can be wrong to its status: too large 413, not JSON content 415, malformed 400,
against the schema 422 (with one detail per problem, unknown fields named). Before the
schema, every body meets the one rule of ``dispatcher.messages.json_limits`` (an event's
``data``, one level below the body, nests at most ``MAX_DATA_DEPTH`` levels; no NUL
character anywhere): 422 at the place it breaks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from api.app_keys import SCHEMAS
from api.errors import ApiError, invalid_field
from dispatcher.messages.json_limits import MAX_DATA_DEPTH, json_problem

# The rule the router applies to Kafka events too; re-exported for the route modules.
from dispatcher.messages.topic_schemas import compile_schema, problems
from dispatcher.moments import parse_datetime, parse_moment

__all__ = ["compile_schema", "moment_field", "parse_datetime", "problems", "read_json"]


def moment_field(value: Any, pointer: str) -> datetime:
    """The moment at ``pointer`` of a body (``dispatcher.moments.parse_moment``), or 422."""
    try:
        return parse_moment(value)
    except ValueError as exc:
        message = f"{pointer[1:]} must be an RFC 3339 date-time or unix seconds: {exc}"
        raise invalid_field(pointer, message, "format") from None


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request, schema: str, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON body, validated against ``schemas/<schema>.json``.

    With ``optional``, an empty body (whatever its content type) means ``{}``.
    """
    raw = await request.read()  # raises 413 beyond client_max_size
    if optional and not raw.strip():
        body: Any = {}
    else:
        if not _is_json(request.content_type):
            raise ApiError(
                415,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
                {"content_type": request.headers.get("Content-Type")},
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        # The body's fields are one level above an event's data (POST /events).
        problem = json_problem(body, MAX_DATA_DEPTH + 1, raw)
        if problem is not None:
            raise invalid_field(problem.pointer, problem.reason, problem.category)
    request.app[SCHEMAS].validate(schema, body)
    assert isinstance(body, dict)  # every request schema is an object
    return body


DEFAULT_PAGE = 20
MAX_PAGE = 100


def page_limit(request: web.Request) -> int:
    """The ``limit`` query parameter of a list route: 1-100, default 20."""
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise invalid_field("limit", f"limit must be a whole number from 1 to {MAX_PAGE}", "limit")
    return limit
