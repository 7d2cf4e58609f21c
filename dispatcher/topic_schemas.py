"""The one validation rule for events: ``data`` against its topic's JSON Schema.

``POST /events`` and the router both call ``data_problems``, so an event is accepted
or refused the same way whichever path it takes. Validators are compiled once per
topic and schema (``ValidatorCache``: a changed schema is a new fingerprint, so it is
compiled again); ``CatalogSchemas`` keeps the router's copy of the catalog's schemas
fresh by reloading them every ``REFRESH_S`` seconds (one small query, not per event),
and tries each event first with ``quick_check`` (a plain-Python proof of validity for
the keywords topic schemas use), so jsonschema runs only on what it cannot prove.

``compile_schema`` and ``problems`` are also what the API validates request bodies with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jsonschema
import jsonschema.validators
import orjson

from dispatcher.store.topics import topic_schemas

if TYPE_CHECKING:
    from dispatcher.db import Executor

REFRESH_S = 5.0
# The dead-letter reason names at most this many problems (the rest are counted).
MAX_REASONS = 5

Validator = jsonschema.protocols.Validator


def parse_datetime(value: str) -> datetime:
    """An RFC 3339 date-time (with ``T`` and a UTC offset or ``Z``); ValueError otherwise."""
    if "T" not in value.upper():
        raise ValueError("expected an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
    moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("the date-time needs a UTC offset or Z")
    return moment


FORMAT_CHECKER = jsonschema.FormatChecker()


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if isinstance(value, str):
        parse_datetime(value)
    return True


def _pointer(path: Iterable[str | int]) -> str:
    return "".join(f"/{part}" for part in path)


def problems(validator: Validator, instance: Any) -> list[dict[str, Any]]:
    """Every reason ``instance`` fails ``validator``, as ``{path, message, keyword}``."""
    found: list[dict[str, Any]] = []
    for error in validator.iter_errors(instance):
        path = _pointer(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            found += [
                {
                    "path": f"{path}/{name}",
                    "message": f"unknown field {name!r}",
                    "keyword": "additionalProperties",
                }
                for name in error.instance
                if name not in known
            ]
            continue
        # A schema may word its own messages: {"x-errors": {"<keyword>": "..."}}.
        worded = error.schema.get("x-errors", {}) if isinstance(error.schema, dict) else {}
        message = worded.get(error.validator) or error.message
        if path:
            message = f"{path[1:]}: {message}"
        found.append({"path": path, "message": message, "keyword": str(error.validator)})
    return sorted(found, key=lambda item: (item["path"], item["keyword"]))


def compile_schema(schema: dict[str, Any]) -> Validator:
    """A validator for ``schema`` (its declared draft), checking formats we support."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=FORMAT_CHECKER)


class ValidatorCache:
    """Compiled validators by topic, compiled again only when the topic's schema changes."""

    def __init__(self) -> None:
        self._compiled: dict[str, tuple[bytes, Validator]] = {}

    def validator(self, topic: str, schema: dict[str, Any]) -> Validator:
        """The validator of ``topic``'s current ``schema``."""
        fingerprint = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        cached = self._compiled.get(topic)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        validator = compile_schema(schema)
        self._compiled[topic] = (fingerprint, validator)
        return validator

    def data_problems(
        self, topic: str, schema: dict[str, Any], data: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``data_problems`` with this cache's validator of ``topic``."""
        return data_problems(self.validator(topic, schema), data)


def data_problems(validator: Validator, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Why an event's ``data`` fails its topic schema; paths start with ``/data``."""
    found = problems(validator, data)
    for problem in found:
        problem["path"] = "/data" + problem["path"]
    return found


def describe(topic: str, found: list[dict[str, Any]]) -> str:
    """One line for the dead-letter reason: the topic and its first problems."""
    shown = "; ".join(f"{p['path']}: {p['message']}" for p in found[:MAX_REASONS])
    more = f" (and {len(found) - MAX_REASONS} more)" if len(found) > MAX_REASONS else ""
    return f"data does not match the schema of {topic}: {shown}{more}"


# A proof of validity for the shapes catalog schemas use (see ``quick_check``): True
# means jsonschema would find no problem; False only "not proven", never "invalid".
QuickCheck = Callable[[Any], bool]

# Keywords that never make an instance invalid.
_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment", "x-errors"})
_KNOWN_DRAFTS = frozenset(
    {
        "http://json-schema.org/draft-04/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    }
)
# The types whose meaning is the same in every draft, for what orjson decodes. An
# integral float (1.0) is an "integer" in draft 6 and later but not in draft 4: never
# proven, left to jsonschema.
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: type(value) is dict,
    "array": lambda value: type(value) is list,
    "string": lambda value: type(value) is str,
    "boolean": lambda value: type(value) is bool,
    "null": lambda value: value is None,
    "integer": lambda value: type(value) is int,
    "number": lambda value: type(value) is int or type(value) is float,
}


def _valid_date_time(value: Any) -> bool:
    if type(value) is not str:
        return True  # formats only constrain strings
    try:
        parse_datetime(value)
    except ValueError:
        return False
    return True


def _of_type(tests: list[Callable[[Any], bool]]) -> QuickCheck:
    return lambda value: any(test(value) for test in tests)


def _has(names: tuple[str, ...]) -> QuickCheck:
    return lambda value: type(value) is not dict or all(name in value for name in names)


def _properties(properties: dict[str, QuickCheck]) -> QuickCheck:
    def check(value: Any) -> bool:
        if type(value) is not dict:
            return True
        return all(test(value[name]) for name, test in properties.items() if name in value)

    return check


def _only(known: frozenset[str]) -> QuickCheck:
    return lambda value: type(value) is not dict or value.keys() <= known


def _items(item: QuickCheck) -> QuickCheck:
    return lambda value: type(value) is not list or all(map(item, value))


def _at_least(bound: float) -> QuickCheck:
    return lambda value: type(value) not in (int, float) or bool(value >= bound)


def _at_most(bound: float) -> QuickCheck:
    return lambda value: type(value) not in (int, float) or bool(value <= bound)


def _all(checks: list[QuickCheck]) -> QuickCheck:
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _quick(schema: Any) -> QuickCheck | None:
    """``quick_check`` of one (sub)schema; None when it uses anything else."""
    if schema is True or schema == {}:
        return lambda value: True
    if not isinstance(schema, dict):
        return None
    checks: list[QuickCheck] = []
    for keyword, argument in schema.items():
        if keyword in _ANNOTATIONS or (keyword == "$schema" and argument in _KNOWN_DRAFTS):
            continue
        if keyword == "type":
            names = argument if isinstance(argument, list) else [argument]
            if not names or not all(isinstance(n, str) and n in _TYPES for n in names):
                return None
            checks.append(_of_type([_TYPES[name] for name in names]))
        elif keyword == "required":
            if not isinstance(argument, list) or not all(isinstance(n, str) for n in argument):
                return None
            checks.append(_has(tuple(argument)))
        elif keyword == "properties":
            if not isinstance(argument, dict):
                return None
            properties: dict[str, QuickCheck] = {}
            for name, subschema in argument.items():
                check = _quick(subschema)
                if check is None:
                    return None
                properties[name] = check
            checks.append(_properties(properties))
        elif keyword == "additionalProperties" and argument is False:
            checks.append(_only(frozenset(schema.get("properties", {}))))
        elif keyword == "items" and isinstance(argument, dict):
            item = _quick(argument)
            if item is None:
                return None
            checks.append(_items(item))
        elif keyword == "minimum" and type(argument) in (int, float):
            checks.append(_at_least(argument))
        elif keyword == "maximum" and type(argument) in (int, float):
            checks.append(_at_most(argument))
        elif keyword == "format" and argument == "date-time":
            checks.append(_valid_date_time)
        else:
            return None
    return _all(checks) if checks else (lambda value: True)


def quick_check(schema: dict[str, Any]) -> QuickCheck | None:
    """A fast proof that an instance is valid against ``schema``, or None.

    Covers what topic schemas are made of (``type``, ``properties``, ``required``,
    ``additionalProperties: false``, ``items``, ``minimum``/``maximum``,
    ``format: date-time``, annotations); anything else gives None. The check returns
    True only when jsonschema would find no problem; on False the caller validates
    with jsonschema, which words the problems (or finds none: False is "not proven").
    ``{"type": "object"}``, the catalog's default, proves every event's ``data``.
    """
    return _quick(schema)


class CatalogSchemas:
    """The catalog's topic schemas for the router, reloaded every ``refresh_s`` seconds."""

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self._refresh_s = refresh_s
        self._schemas: dict[str, dict[str, Any]] = {}
        self._loaded_at = float("-inf")
        self._validators = ValidatorCache()
        # By topic: the schema object last checked and its quick check (None: none).
        self._quick: dict[str, tuple[dict[str, Any], QuickCheck | None]] = {}

    async def refresh_if_stale(self, executor: Executor) -> None:
        """Reload the schemas when the last load is older than ``refresh_s``."""
        now = time.monotonic()
        if now - self._loaded_at >= self._refresh_s:
            self._schemas = await topic_schemas(executor)
            self._loaded_at = now

    def problems_of(self, topic: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Why ``data`` fails ``topic``'s schema (nothing for a topic not loaded yet)."""
        schema = self._schemas.get(topic)
        if schema is None:
            return []  # the router's catalog check decides about unknown topics
        cached = self._quick.get(topic)
        if cached is None or cached[0] is not schema:  # a reload is a new object
            cached = (schema, quick_check(schema))
            self._quick[topic] = cached
        check = cached[1]
        if check is not None and check(data):
            return []
        return self._validators.data_problems(topic, schema, data)
