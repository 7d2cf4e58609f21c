"""Hooklane's one reader of UUIDs (webhook ids), with one contract.

``parse_uuid`` returns the ``uuid.UUID`` of any string ``uuid.UUID`` reads (canonical,
upper case, without hyphens, in braces, ``urn:uuid:``) and raises ValueError for
anything else (not a string, wrong length, not hex), never TypeError or
AttributeError. Callers that answer "not found" for an id that cannot be one catch the
ValueError; ``valid_uuids`` keeps the ids of a list that are UUIDs. Ids repeat (every
delivery names its webhook), so the answers are cached.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=65536)
def _parse(text: str) -> uuid.UUID:
    return uuid.UUID(text)


def parse_uuid(text: object) -> uuid.UUID:
    """``text`` as a UUID; ValueError when it is not one (see the module docstring)."""
    if not isinstance(text, str):
        raise ValueError(f"{type(text).__name__} is not a UUID string")
    return _parse(text)


def valid_uuids(texts: Iterable[str]) -> dict[str, uuid.UUID]:
    """``{text: UUID}`` of the ``texts`` that ``parse_uuid`` reads; the others are left out."""
    parsed = {}
    for text in texts:
        try:
            parsed[text] = parse_uuid(text)
        except ValueError:
            continue
    return parsed
