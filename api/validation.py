"""Request bodies: read, parse and validate against the JSON Schemas in ``schemas/``.

Every ``schemas/<name>.json`` except the OpenAPI document is compiled once into a
validator. ``read_json`` maps each way a body can be wrong to its status: too large
413, not JSON content 415, malformed 400, against the schema 422 (with one detail
per problem, unknown fields named). Before the schema, every body meets the one rule
of ``dispatcher.messages.json_limits`` (an event's ``data``, one level below the body, nests at
most ``MAX_DATA_DEPTH`` levels; no NUL character anywhere): 422 at the place it breaks.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from api.app_keys import SCHEMAS
from api.errors import ApiError, invalid_field, validation_failed
from dispatcher.messages.json_limits import MAX_DATA_DEPTH, json_problem

# The rule the router applies to Kafka events too; re-exported for the route modules.
from dispatcher.messages.topic_schemas import compile_schema, parse_datetime, problems

__all__ = ["Schemas", "compile_schema", "parse_datetime", "problems", "read_json"]

# The repository's schemas/ (editable installs, tests); an installed package (the
# container image) finds them in the working directory, where the Dockerfile puts them.
SCHEMA_DIR = next(
    (
        path
        for path in (Path(__file__).resolve().parent.parent / "schemas", Path.cwd() / "schemas")
        if path.is_dir()
    ),
    Path(__file__).resolve().parent.parent / "schemas",
)
OPENAPI = "openapi.json"


class Schemas:
    """The compiled request-body validators and the OpenAPI document."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self.directory = directory
        self.sources: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.json")):
            if path.name != OPENAPI:
                self.sources[path.stem] = orjson.loads(path.read_bytes())
        self.validators = {name: compile_schema(src) for name, src in self.sources.items()}
        self.openapi = orjson.loads((directory / OPENAPI).read_bytes())
        self.openapi_bundle = orjson.dumps(self._bundle())

    def validate(self, name: str, instance: Any) -> None:
        """Raise the 422 envelope unless ``instance`` satisfies schema ``name``."""
        found = problems(self.validators[name], instance)
        if found:
            raise validation_failed(found)

    def _bundle(self) -> dict[str, Any]:
        """The OpenAPI document with each ``{"$ref": "x.json"}`` pulled into components.

        The file in ``schemas/`` references its sibling files (one source of truth);
        the served document is self-contained so any client can use it.
        """
        document = copy.deepcopy(self.openapi)
        components = document.setdefault("components", {}).setdefault("schemas", {})
        titles = {}
        for stem, source in self.sources.items():
            title = source.get("title", stem)
            components[title] = {k: v for k, v in source.items() if k != "$schema"}
            titles[f"{stem}.json"] = f"#/components/schemas/{title}"

        def rewrite(node: Any) -> Any:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref in titles:
                    return {**node, "$ref": titles[ref]}
                return {key: rewrite(value) for key, value in node.items()}
            if isinstance(node, list):
                return [rewrite(item) for item in node]
            return node

        bundled: dict[str, Any] = rewrite(document)
        return bundled


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
