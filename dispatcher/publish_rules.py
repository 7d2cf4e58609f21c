"""What an event must satisfy before it is published: one rule for ``POST /events`` and
``hooklane publish``.

The topic is in the catalog (and is not one of Hooklane's own operational topics), the
tenant exists, and ``data`` matches the topic's JSON Schema. A refusal names the
problem in one line; an unknown topic suggests the catalog names it is closest to.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from dispatcher.messages.operational import is_operational
from dispatcher.messages.topic_schemas import ValidatorCache
from dispatcher.store.tenants import tenant_exists
from dispatcher.store.topic_store import Topic, get_topic, topic_names

if TYPE_CHECKING:
    from dispatcher.store.db import Executor


class PublishRefused(ValueError):
    """The event breaks the publish rule; ``path`` is the JSON pointer of the culprit."""

    def __init__(
        self, path: str, keyword: str, message: str, problems: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.keyword = keyword
        self.message = message
        self.problems = problems or [{"path": path, "message": message, "keyword": keyword}]


def suggestion(name: str, known: set[str]) -> str:
    """`` (did you mean X?)`` for the catalog name closest to ``name``, or nothing."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    if not close:
        close = [known_name for known_name in known if known_name.lower() == name.lower()]
    return f" (did you mean {close[0]}?)" if close else ""


async def catalog_topic(executor: Executor, name: str, catalog_hint: str) -> Topic:
    """The catalog entry ``name`` that callers may publish on, else ``PublishRefused``."""
    topic = await get_topic(executor, name)
    if topic is None:
        hint = suggestion(name, await topic_names(executor))
        raise PublishRefused(
            "/topic", "catalog", f"unknown topic {name!r}{hint}; {catalog_hint} lists the catalog"
        )
    if is_operational(topic.name):
        raise PublishRefused(
            "/topic", "reserved", f"{topic.name} is published by Hooklane itself, not by callers"
        )
    return topic


async def require_tenant(executor: Executor, tenant_id: str) -> None:
    """``PublishRefused`` unless tenant ``tenant_id`` exists."""
    if not await tenant_exists(executor, tenant_id):
        raise PublishRefused(
            "/tenant_id",
            "tenant",
            f"unknown tenant {tenant_id!r} (`hooklane tenants list` shows the tenants)",
        )


def check_data(validators: ValidatorCache, topic: Topic, data: dict[str, Any]) -> None:
    """``PublishRefused`` (every problem, the first in the message) unless ``data`` fits."""
    found = validators.data_problems(topic.name, topic.schema, data)
    if found:
        raise PublishRefused(
            found[0]["path"],
            "schema",
            f"data does not match the schema of {topic.name}: {found[0]['message']}",
            found,
        )
