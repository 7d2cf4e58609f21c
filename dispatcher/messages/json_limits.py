"""What any JSON Hooklane accepts may hold: one depth limit, no NUL characters.

The one rule for an event's ``data`` wherever it comes from (a Kafka record, a delivery
task, ``POST /events``) and for every API request body:

- **Depth**: ``data`` nests at most ``MAX_DATA_DEPTH`` levels (``data`` itself is level
  1; an API body, whose fields sit one level above ``data``, at most one more). JSON
  parsers accept far deeper documents (orjson reads 1,024 levels) than Hooklane can
  encode again (orjson writes 254): a record nested in between used to stop routing.
- **NUL**: no string and no key holds ``U+0000``. Postgres text and jsonb cannot store
  it (the backlog keeps tasks as jsonb), so it is refused at the door, not half-stored.

``json_problem`` finds the first breach with its JSON pointer. Given the raw bytes it
first looks at them (two ``bytes`` scans in C): a document with no more brackets than
the limit and no ``\\u0000`` escape cannot break the rule, so nearly every event is
cleared without walking it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

MAX_DATA_DEPTH = 64
NUL = "\x00"


class Problem(NamedTuple):
    """Where the rule is broken (``pointer``: a JSON pointer), what and its kind."""

    pointer: str
    reason: str
    category: str  # "too_deep" or "nul_character"


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_problem(
    value: Any, max_depth: int, raw: bytes | None = None, *, root: str = ""
) -> Problem | None:
    """The first breach of the rule in ``value`` (nested ``max_depth`` at most), or None.

    ``raw``: the bytes ``value`` was parsed from, if at hand (a fast path); ``root``: the
    JSON pointer of ``value`` in its document (prefixes the pointers reported).
    """
    if raw is not None and b"\\u0000" not in raw and raw.count(b"[") + raw.count(b"{") <= max_depth:
        return None
    # Depth-first over containers; each entry is (value, its depth, its pointer).
    stack: list[tuple[Any, int, str]] = [(value, 1, root)]
    while stack:
        node, depth, pointer = stack.pop()
        if isinstance(node, str):
            if NUL in node:
                return Problem(
                    pointer, f"{pointer or 'the value'} holds a NUL character", "nul_character"
                )
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            return Problem(
                pointer, f"JSON nested deeper than {max_depth} levels at {pointer}", "too_deep"
            )
        if isinstance(node, dict):
            for key, item in node.items():
                child = f"{pointer}/{_escape(key)}"
                if NUL in key:
                    return Problem(
                        child, f"the key at {child} holds a NUL character", "nul_character"
                    )
                if isinstance(item, str | dict | list):
                    stack.append((item, depth + 1, child))
        else:
            for index, item in enumerate(node):
                if isinstance(item, str | dict | list):
                    stack.append((item, depth + 1, f"{pointer}/{index}"))
    return None
