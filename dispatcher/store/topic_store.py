"""The topic catalog: which topics exist, and the JSON Schema of each topic's ``data``.

Seeded by migration 001 with Commenda's topics; operators add more with
``hooklane topics add NAME --schema FILE`` (an upsert).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jsonschema
import jsonschema.validators

if TYPE_CHECKING:
    import asyncpg

    from dispatcher.store.db import Executor

TOPIC_NAME = re.compile(r"^[A-Z0-9_]+(\.[A-Z0-9_]+)*$")
MAX_TOPIC_NAME = 200


class InvalidTopic(ValueError):
    """A topic name or schema that the catalog refuses; the message says why."""


@dataclass(frozen=True, slots=True)
class Topic:
    """One catalog entry."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    def example(self) -> dict[str, Any]:
        """A sample ``data`` object: the schema's first object in ``examples``, else ``{}``."""
        examples = self.schema.get("examples")
        if isinstance(examples, list) and examples and isinstance(examples[0], dict):
            return dict(examples[0])
        return {}


def check_topic_name(name: str) -> None:
    """Raise InvalidTopic unless ``name`` is dot-separated upper-case words (``A.B_C``)."""
    if len(name) > MAX_TOPIC_NAME or not TOPIC_NAME.match(name):
        raise InvalidTopic(
            f"topic name {name!r} must be dot-separated words of A-Z, 0-9 and _ "
            f"(at most {MAX_TOPIC_NAME} characters), e.g. REGISTRATIONS.NEW.SUCCEEDED"
        )


def check_topic_schema(schema: Any) -> None:
    """Raise InvalidTopic unless ``schema`` is a valid JSON Schema object."""
    if not isinstance(schema, dict):
        raise InvalidTopic("the topic schema must be a JSON object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidTopic(f"the topic schema is not a valid JSON Schema: {exc.message}") from None


def _topic(row: asyncpg.Record) -> Topic:
    return Topic(row["name"], row["description"], row["schema"], row["created_at"])


async def list_topics(executor: Executor) -> list[Topic]:
    """Every catalog topic, by name."""
    rows = await executor.fetch(
        "SELECT name, description, schema, created_at FROM topics ORDER BY name"
    )
    return [_topic(row) for row in rows]


async def get_topic(executor: Executor, name: str) -> Topic | None:
    """The topic called ``name``, or None."""
    row = await executor.fetchrow(
        "SELECT name, description, schema, created_at FROM topics WHERE name = $1", name
    )
    return None if row is None else _topic(row)


async def topic_names(executor: Executor) -> set[str]:
    """The names of all catalog topics."""
    return {row["name"] for row in await executor.fetch("SELECT name FROM topics")}


async def topic_schemas(executor: Executor) -> dict[str, dict[str, Any]]:
    """The JSON Schema of every catalog topic's ``data``, by name."""
    rows = await executor.fetch("SELECT name, schema FROM topics")
    return {row["name"]: row["schema"] for row in rows}


async def add_topic(
    executor: Executor, name: str, description: str, schema: Mapping[str, Any]
) -> Topic:
    """Add ``name`` to the catalog, or replace its description and schema (upsert)."""
    check_topic_name(name)
    check_topic_schema(schema)
    row = await executor.fetchrow(
        "INSERT INTO topics (name, description, schema) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE"
        " SET description = EXCLUDED.description, schema = EXCLUDED.schema"
        " RETURNING name, description, schema, created_at",
        name,
        description,
        dict(schema),
    )
    assert row is not None
    return _topic(row)


async def topic_exists(executor: Executor, name: str) -> bool:
    """Whether ``name`` is in the catalog."""
    return bool(await executor.fetchval("SELECT 1 FROM topics WHERE name = $1", name))
