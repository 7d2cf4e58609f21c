"""A webhook's page, shared by the actions that end on it (create, test, retry, recover).

It shows the webhook's health (parked backlog, failing since), its actions and its
attempts: newest first, filtered by ``?outcome``, paged by ``?cursor``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.app_keys import POOL
from api.attempts import attempts_page
from api.portal.pages import render
from dispatcher.store import webhook_store as store
from dispatcher.store.backlog import backlog_sizes, next_attempts

PAGE = 20
OUTCOMES = ("success", "failure")


async def health(request: web.Request, webhooks: list[store.Webhook]) -> dict[str, dict[str, Any]]:
    """Per webhook id: parked backlog size, its next attempt and failing-since."""
    pool = request.app[POOL]
    ids = [webhook.id for webhook in webhooks]
    backlog = await backlog_sizes(pool, ids)
    failing = await store.failing_since(pool, ids)
    next_at = await next_attempts(pool, ids)
    return {
        i: {
            "backlog": backlog.get(i, 0),
            "failing_since": failing.get(i),
            "next_attempt_at": next_at.get(i),  # set while parked
        }
        for i in ids
    }


async def attempts_context(request: web.Request, webhook: store.Webhook) -> dict[str, Any]:
    """The attempts table of ``webhook``'s page: ``?outcome`` filter, ``?cursor`` page."""
    outcome = request.query.get("outcome") or None
    cursor = request.query.get("cursor") or None
    attempts, next_cursor = await attempts_page(request, webhook, outcome, PAGE, cursor)
    return {
        "attempts": attempts,
        "outcome": outcome,
        "outcomes": OUTCOMES,
        "next_cursor": next_cursor,
        "paged": cursor is not None,
    }


async def detail_page(
    request: web.Request, webhook: store.Webhook, status: int = 200, **notices: Any
) -> web.Response:
    """A webhook's page: health, actions and its attempts (``notices``: one-off messages)."""
    context: dict[str, Any] = {
        "webhook": webhook,
        "health": (await health(request, [webhook]))[webhook.id],
        "secret": None,
        "rotated": False,
        "test": None,
        "notice": None,
        "problem": None,
    }
    context.update(notices)
    context.update(await attempts_context(request, webhook))
    return render(request, "webhook.html", context, status=status)
