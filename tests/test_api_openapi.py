"""The OpenAPI document in schemas/ matches the routes, and its references all resolve."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
from cryptography.fernet import Fernet

from api.app import create_app
from api.auth import is_portal_page
from api.schemas import SCHEMA_DIR, Schemas
from dispatcher.settings import Settings
from dispatcher.store.attempt_store import Attempt

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# Documented now, registered by api/attempts.py once it lands.
ATTEMPTS_OPERATIONS = {
    ("GET", "/webhooks/{id}/attempts"),
    ("POST", "/webhooks/{id}/attempts/{attempt_id}/retry"),
    ("POST", "/webhooks/{id}/recover"),
}


def registered_operations() -> set[tuple[str, str]]:
    app = create_app(Settings(secret_key=Fernet.generate_key().decode()))
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info["formatter"]
        # The portal's HTML pages are not API (DESIGN.md §6); POST /portal/sessions is.
        if is_portal_page(path):
            continue
        found.add((route.method, path))
    return found


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_routes_and_openapi_paths_match():
    """Every route is documented and every documented operation is a route (no drift either way)."""
    documented = documented_operations(Schemas().openapi)
    if importlib.util.find_spec("api.attempts") is None:
        documented -= ATTEMPTS_OPERATIONS
    registered = registered_operations()
    assert registered - documented == set(), "routes missing from schemas/openapi.json"
    assert documented - registered == set(), "documented operations with no route"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_served_document_is_self_contained():
    """The served document has only internal references, and each one resolves."""
    bundle = orjson.loads(Schemas().openapi_bundle)
    refs = _refs(bundle)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node = bundle
        for part in ref[2:].split("/"):
            node = node[part]
        assert isinstance(node, dict)


def test_request_bodies_reference_the_validated_schemas():
    """Each documented request body is one of the schemas/ files the API validates with."""
    schemas = Schemas()
    files = [
        ref
        for item in schemas.openapi["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "requestBody" in operation
        for ref in _refs(operation["requestBody"])
    ]
    assert sorted(files) == sorted(
        [
            "webhook_create.json",
            "webhook_update.json",
            "test_trigger.json",
            "event_publish.json",
            "recover.json",
            "replay.json",
            "api_key_create.json",
        ]
    )
    for name in files:
        assert (SCHEMA_DIR / name).is_file()
        assert name.removesuffix(".json") in schemas.validators


def test_every_schema_file_is_a_valid_json_schema():
    """schemas/*.json (but the OpenAPI document) pass their metaschema, forbid unknown fields."""
    schemas = Schemas()
    assert "event" in schemas.sources
    for name, source in schemas.sources.items():
        jsonschema.validators.validator_for(source).check_schema(source)
        assert source.get("additionalProperties") is False, name


def test_operations_declare_auth_errors():
    """Operations behind the API key document 401; the public ones opt out of security."""
    document = Schemas().openapi
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            if path in {"/healthz", "/openapi.json"}:
                assert operation["security"] == [], path
            else:
                assert "401" in operation["responses"], (method, path)


def _attempt(**fields: Any) -> Attempt:
    base: dict[str, Any] = {
        "id": 7,
        "webhook_id": "4f1f7e53-6a8e-4f53-9d2c-3f3f6d1b2a10",
        "event_id": "evt_1",
        "topic": "A.B",
        "attempt": 1,
        "attempted_at": datetime(2026, 12, 1, tzinfo=UTC),
        "outcome": "failure",
        "status_code": 503,
        "duration_ms": 1.5,
        "error": "HTTP 503",
        "response_body": "busy",
        "test": False,
    }
    return Attempt(**(base | fields))


def test_attempt_schema_matches_the_attempt_object():
    """The Attempt schema documents exactly the fields the API returns; detail is optional."""
    schema = orjson.loads((SCHEMA_DIR / "openapi.json").read_bytes())["components"]["schemas"][
        "Attempt"
    ]
    with_detail = _attempt(response_headers=(("Retry-After", "5"),), error_class="HTTPStatus")
    assert set(schema["properties"]) == set(with_detail.to_json())
    assert {"response_headers", "error_class"}.isdisjoint(schema["required"])
    for attempt in (with_detail, _attempt()):  # recorded with detail, and before it existed
        jsonschema.validate(attempt.to_json(), schema)
    assert with_detail.to_json()["response_headers"] == [{"name": "Retry-After", "value": "5"}]
