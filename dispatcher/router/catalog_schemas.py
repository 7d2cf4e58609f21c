"""The router's copy of the catalog's topic schemas, kept fresh from Postgres.

``CatalogSchemas`` reloads the schemas every ``REFRESH_S`` seconds (one small query, not
per event) and tries each event first with ``quick_check`` (a proof of validity), so
jsonschema runs only on what it cannot prove. The rule itself is
``dispatcher.messages.topic_schemas``, shared with ``POST /events``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dispatcher.messages.topic_schemas import QuickCheck, ValidatorCache, quick_check
from dispatcher.store.topic_store import topic_schemas

if TYPE_CHECKING:
    from dispatcher.store.db import Executor

REFRESH_S = 5.0


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
