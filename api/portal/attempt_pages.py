"""Portal pages of a webhook's attempts: the table, an attempt's detail, test, retry, recover.

Each action calls the REST API's function (``send_test_event``, ``retry_attempt``,
``recover_since``, ``attempts_page``), so outcomes, limits and messages are the same.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from aiohttp import web

from api.attempts import (
    attempt_or_404,
    attempt_task,
    recover_since,
    retry_attempt,
)
from api.backlog_wake import wake_parked_backlog
from api.errors import ApiError
from api.portal.pages import render
from api.portal.webhook_detail import detail_page
from api.trigger import send_test_event
from api.webhooks import webhook_or_404
from dispatcher.delivery.http.sender import USER_AGENT
from dispatcher.messages.wire import delivery_body
from dispatcher.moments import parse_moment

# What the deliverer signs with; the portal shows that they were sent, never their value.
SIGNATURE_HEADERS = ("Commenda-X-Secret", "webhook-signature")


async def detail(request: web.Request) -> web.Response:
    """GET /portal/webhooks/{id}/attempts/{attempt_id}: what was sent and what came back."""
    webhook = await webhook_or_404(request)
    attempt = await attempt_or_404(request, webhook, request.match_info["attempt_id"])
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": attempt.event_id,
        "webhook-timestamp": str(int(attempt.attempted_at.timestamp())),
    }
    headers.update(dict.fromkeys(SIGNATURE_HEADERS, "(signature: not shown)"))
    # The attempt log keeps no event data: the body is shown while the event is stored.
    task = await attempt_task(request, webhook, attempt)
    body = None
    if task is not None:
        raw = delivery_body(task.event, webhook.id, webhook.api_version)
        body = orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
    context = {"webhook": webhook, "attempt": attempt, "headers": headers, "body": body}
    return render(request, "attempt.html", context)


async def test(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}/test: "Send test event", the outcome on the page."""
    webhook = await webhook_or_404(request)
    outcome = await send_test_event(request, webhook, {})
    return await detail_page(request, webhook, test=outcome)


async def retry(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}/attempts/{attempt_id}/retry."""
    webhook = await webhook_or_404(request)
    try:
        event_id = await retry_attempt(request, webhook, request.match_info["attempt_id"])
    except ApiError as exc:
        if exc.code not in {"event_not_stored", "unavailable"}:
            raise
        return await detail_page(request, webhook, status=exc.status, problem=exc.message)
    notice = f"Event {event_id} is queued for redelivery."
    return await detail_page(request, webhook, notice=notice)


async def retry_backlog(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}/backlog/retry: "Retry now" on a parked backlog."""
    webhook = await webhook_or_404(request)
    if await wake_parked_backlog(request, webhook.id, "portal"):
        notice = "The backlog's oldest delivery is being retried now; on success it drains."
        return await detail_page(request, webhook, notice=notice)
    problem = "Nothing to retry: the webhook is not parked (or is disabled: enable it first)."
    return await detail_page(request, webhook, status=409, problem=problem)


def _since(value: str) -> datetime:
    """A ``datetime-local`` field (``2026-12-01T09:30``, read as UTC), or any moment
    ``parse_moment`` reads; ValueError else."""
    try:
        return parse_moment(value)
    except ValueError:
        return parse_moment(value + "Z")  # a datetime-local value has no offset: the form says UTC


async def recover(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}/recover: "Recover since…" the failed deliveries."""
    webhook = await webhook_or_404(request)
    raw = str((await request.post()).get("since", ""))
    try:
        since = _since(raw)
    except ValueError:
        problem = "since must be a date and time such as 2026-12-01T09:30 (UTC)"
        return await detail_page(request, webhook, status=422, problem=problem)
    try:
        queued = await recover_since(request, webhook, since)
    except ApiError as exc:
        return await detail_page(request, webhook, status=exc.status, problem=exc.message)
    notice = f"{queued} failed deliver{'y' if queued == 1 else 'ies'} queued again, oldest first."
    return await detail_page(request, webhook, notice=notice)


def setup_routes(app: web.Application) -> None:
    """Register the attempt pages and actions."""
    app.router.add_get("/portal/webhooks/{id}/attempts/{attempt_id}", detail, allow_head=False)
    app.router.add_post("/portal/webhooks/{id}/attempts/{attempt_id}/retry", retry)
    app.router.add_post("/portal/webhooks/{id}/test", test)
    app.router.add_post("/portal/webhooks/{id}/recover", recover)
    app.router.add_post("/portal/webhooks/{id}/backlog/retry", retry_backlog)
