"""The delivery options of a webhook (DESIGN.md §11) at the API: checks and reads.

``checked_options`` applies the rules a JSON Schema cannot express and returns what
the store takes (``dispatcher.store.delivery_options.OPTIONS``); ``options_json``
is what every read shows (never a secret member).
"""

from __future__ import annotations

from typing import Any

from api.errors import validation_failed
from dispatcher.delivery.custom_headers import header_problems
from dispatcher.store import webhooks as store


def checked_options(body: dict[str, Any], current: store.Webhook | None) -> dict[str, Any]:
    """The options in a schema-valid create or update ``body``, checked; else a 422.

    ``current`` is the webhook being updated (None on create): an update is checked
    against the options it keeps.
    """
    found: list[dict[str, Any]] = []
    has_auth = False  # until step 4
    headers = body.get("headers")
    if headers is None and "headers" not in body and current is not None:
        headers = current.headers  # kept: still checked against a new auth
    for name, message in header_problems(headers or {}, has_auth=has_auth):
        found.append({"path": f"/headers/{name}", "message": message, "keyword": "headers"})
    if found:
        raise validation_failed(found)
    return {name: body[name] for name in ("headers",) if name in body}


def options_json(webhook: store.Webhook) -> dict[str, Any]:
    """The options as reads show them."""
    return {"headers": webhook.headers or {}}
