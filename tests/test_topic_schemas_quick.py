"""quick_check: a fast proof of validity that never disagrees with jsonschema."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher import topic_schemas
from dispatcher.topic_schemas import CatalogSchemas, compile_schema, data_problems, quick_check

MIGRATIONS = Path(topic_schemas.__file__).parent / "migrations"


def seeded_schemas() -> list[dict[str, Any]]:
    """The catalog's seeded topic schemas (the JSON literals of the migrations)."""
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        for literal in re.findall(r"'(\{\"type\": \"object\".*?\})'\)", path.read_text()):
            found.append(orjson.loads(literal))
    return found


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object"},
    {},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}},
    {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]},
    {"type": "object", "properties": {"a": {"type": ["string", "null"]}}},
    {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
    {"type": "object", "properties": {"l": {"type": "array", "items": {"type": "boolean"}}}},
    {"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}},
    {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "properties": {"i": {"type": "integer"}},
    },
    *seeded_schemas(),
]
VALUES: list[Any] = [None, True, False, 0, 1, -1, 10, 1.0, 1.5, -0.5, "", "x", [], [True], [1], {}]
VALUES += ["2026-01-31T12:00:00Z", "2026-01-31", {"n": 1}]
KEYS = ["n", "a", "l", "t", "i", "registration_id", "state", "webhook_id", "backlog", "other"]


def instances() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [{}]
    for key, value in itertools.product(KEYS, VALUES):
        found.append({key: value})
    for (k1, v1), (k2, v2) in itertools.islice(
        itertools.combinations(itertools.product(KEYS[:6], VALUES[:12]), 2), 0, None, 37
    ):
        found.append({k1: v1, k2: v2})
    return found


def test_the_seeded_schemas_are_all_covered() -> None:
    """Every schema the catalog ships with has a quick check."""
    seeded = seeded_schemas()
    assert len(seeded) >= 13
    assert all(quick_check(schema) is not None for schema in seeded)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: str(schema)[:60])
def test_a_proof_of_validity_is_never_wrong(schema: dict[str, Any]) -> None:
    """Whenever quick_check says valid, jsonschema finds no problem (examples are proven)."""
    check = quick_check(schema)
    assert check is not None
    validator = compile_schema(schema)
    proven = 0
    for data in instances() + schema.get("examples", []):
        if check(data):
            proven += 1
            assert data_problems(validator, data) == [], (schema, data)
    assert proven > 0


def test_the_default_schema_accepts_every_object() -> None:
    """{"type": "object"}, the catalog's default, proves every event's data without jsonschema."""
    check = quick_check({"type": "object"})
    assert check is not None
    assert all(check(data) for data in instances())


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}},
        {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
        {"type": "object", "properties": {"a": {"enum": [1, 2]}}},
        {"type": "object", "properties": {"n": {"minimum": 0, "exclusiveMinimum": True}}},
        {"$schema": "http://example.com/custom", "type": "object"},
        {"type": "object", "properties": {"s": {"type": "string", "format": "email"}}},
    ],
)
def test_anything_else_is_left_to_jsonschema(schema: dict[str, Any]) -> None:
    """A keyword outside the covered set (or an unknown draft) means no quick check."""
    assert quick_check(schema) is None


def test_catalog_schemas_still_word_the_problems() -> None:
    """Invalid data is never proven valid, so the router's reasons are jsonschema's."""
    schemas = CatalogSchemas()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    schemas._schemas = {"T": schema}
    assert schemas.problems_of("T", {"n": 1}) == []
    found = schemas.problems_of("T", {"n": "one"})
    assert [problem["path"] for problem in found] == ["/data/n"]
    assert schemas.problems_of("T", {}) != []
    schemas._schemas = {"T": {"type": "object", "properties": {"n": {"type": "string"}}}}
    assert schemas.problems_of("T", {"n": "one"}) == []  # a reloaded schema is used
