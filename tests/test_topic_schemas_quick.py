"""quick_check (jsonschema-rs): a fast proof of validity that never disagrees with jsonschema."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.messages.topic_schemas import compile_schema, data_problems, quick_check
from dispatcher.router.catalog_schemas import CatalogSchemas
from dispatcher.store import db

MIGRATIONS = Path(db.__file__).parent / "migrations"


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
    # Keywords the earlier plain-Python check left to jsonschema.
    {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
    {"type": "object", "properties": {"a": {"enum": [1, 2, "x"]}, "n": {"const": 1}}},
    {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "properties": {"n": {"minimum": 0, "exclusiveMinimum": True}},
    },
    {"type": "object", "properties": {"n": {"exclusiveMinimum": 0, "multipleOf": 0.5}}},
    {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 1, "pattern": "^x"}}},
    {
        "type": "object",
        "properties": {"l": {"$ref": "#/$defs/flags"}, "a": {"anyOf": [{"type": "null"}, {}]}},
        "$defs": {"flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 1}},
    },
    {"type": "object", "properties": {"n": {"oneOf": [{"type": "integer"}, {"minimum": 5}]}}},
    *seeded_schemas(),
]
VALUES: list[Any] = [None, True, False, 0, 1, -1, 10, 1.0, 1.5, -0.5, "", "x", [], [True], [1], {}]
VALUES += ["2026-01-31T12:00:00Z", "2026-01-31", {"n": 1}, "a@b.example", "2026-12-31T23:59:60Z"]
VALUES += ["2026-01-31 12:00:00Z", "2026-01-31T12:00:00", "2026-01-31t12:00:00.123456789+01:00"]
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
def test_it_agrees_with_jsonschema(schema: dict[str, Any]) -> None:
    """A proof is never wrong (valid means jsonschema finds no problem), and on this
    table jsonschema-rs also proves everything jsonschema accepts (so the fast path is
    the one taken); the examples are proven."""
    check = quick_check(schema)
    assert check is not None
    validator = compile_schema(schema)
    proven = refused = 0
    for data in instances() + schema.get("examples", []):
        valid = data_problems(validator, data) == []
        if check(data):
            proven += 1
            assert valid, (schema, data)
        else:
            refused += 1
            assert not valid, ("not proven, yet valid", schema, data)
    assert proven > 0 and (refused > 0 or schema in ({"type": "object"}, {}))


def test_the_default_schema_accepts_every_object() -> None:
    """{"type": "object"}, the catalog's default, proves every event's data without jsonschema."""
    check = quick_check({"type": "object"})
    assert check is not None
    assert all(check(data) for data in instances())


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}},
        {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
        {"$schema": "http://example.com/custom", "type": "object"},
        {"type": 5},
    ],
)
def test_what_cannot_be_compiled_is_left_to_jsonschema(schema: dict[str, Any]) -> None:
    """An unresolvable reference, an unknown draft or a broken schema: no quick check
    (and no network: references are never fetched)."""
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
