"""The JSON Schemas in ``schemas/``: request-body validators and the OpenAPI document.

``Schemas`` compiles every ``schemas/<name>.json`` except the OpenAPI document once, and
bundles the OpenAPI document into one self-contained file for ``/openapi.json``. The app
holds one (``api.app_keys.SCHEMAS``); ``api.validation.read_json`` validates bodies with it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from api.errors import validation_failed
from dispatcher.messages.topic_schemas import compile_schema, problems

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
