"""``/webhooks``: create, list, read, partially update and delete a tenant's webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from api.app_keys import POOL, SECRET_BOX, SETTINGS
from api.auth import tenant_id
from api.delivery_options import checked_options, options_json
from api.errors import ApiError, invalid_field, not_found, validation_failed
from api.responses import decode_cursor, encode_cursor, json_response, rfc3339
from api.validation import page_limit, read_json
from dispatcher.delivery.http.ssrf import InvalidTarget, check_target_url
from dispatcher.delivery.secrets import generate_secret
from dispatcher.settings import Settings
from dispatcher.store import webhook_store as store
from dispatcher.store.backlog import backlog_sizes
from dispatcher.store.topic_store import TOPIC_NAME, topic_names
from dispatcher.subscription.filters import validate as filter_problem
from dispatcher.subscription.retry_override import InvalidRetry, parse_retry

log = structlog.get_logger(__name__)

STATES = ("ENABLED", "PAUSED", "DISABLED")


def webhook_json(webhook: store.Webhook, backlog: int = 0) -> dict[str, Any]:
    """The webhook object of every response (never the secret)."""
    return {
        "id": webhook.id,
        "url": webhook.url,
        "name": webhook.name,
        "topics": list(webhook.topics),
        "state": webhook.state,
        "api_version": webhook.api_version,
        "ordering": webhook.ordering,
        "max_in_flight": webhook.max_in_flight,
        "secret_preview": webhook.secret_preview,
        "disabled_reason": webhook.disabled_reason,
        "last_success_at": rfc3339(webhook.last_success_at),
        "last_failure_at": rfc3339(webhook.last_failure_at),
        "consecutive_failures": webhook.consecutive_failures,
        "backlog": backlog,
        "filter": webhook.filter,
        "rate_limit": webhook.rate_limit,
        "retry": webhook.retry,
        # The same count as ``backlog``: buffered while PAUSED, parked while failing.
        "buffered": backlog,
        "concurrency": concurrency(webhook),
        **options_json(webhook),
        "created_at": rfc3339(webhook.created_at),
        "updated_at": rfc3339(webhook.updated_at),
    }


def concurrency(webhook: store.Webhook) -> int:
    """Requests the webhook may have in flight now: 1 when ordered, else its adaptive window.

    The window starts at 1 and is reported by the deliverer every few seconds while it
    changes; it never exceeds ``max_in_flight`` (which may have just been lowered).
    """
    if webhook.ordering == "ordered":
        return 1
    return max(1, min(webhook.concurrency or 1, webhook.max_in_flight))


async def webhook_or_404(request: web.Request, webhook_id: str | None = None) -> store.Webhook:
    """The caller's webhook ``webhook_id`` (default: the ``{id}`` of the route), or 404."""
    wanted = webhook_id if webhook_id is not None else request.match_info["id"]
    webhook = await store.get_webhook(request.app[POOL], tenant_id(request), wanted)
    if webhook is None:
        raise not_found()
    return webhook


async def _url_problems(url: str | None, settings: Settings) -> list[dict[str, Any]]:
    if url is None:
        return []
    try:
        await check_target_url(url, settings)
    except InvalidTarget as exc:
        return [{"path": "/url", "message": str(exc), "keyword": "target"}]
    return []


async def _topic_problems(
    request: web.Request, topics: Sequence[str] | None
) -> list[dict[str, Any]]:
    if topics is None:
        return []
    known = await topic_names(request.app[POOL])
    return [
        {
            "path": f"/topics/{index}",
            "message": f"unknown topic {topic!r} (GET /topics lists the catalog)",
            "keyword": "catalog",
        }
        for index, topic in enumerate(topics)
        if topic not in known
    ]


def _subscription_problems(body: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """A filter the router can compile, a retry override within the operator's bounds."""
    found = []
    if body.get("filter") is not None:
        problem = filter_problem(body["filter"])
        if problem is not None:
            found.append(
                {
                    "path": f"/filter{problem.path}",
                    "message": f"filter{problem.path}: {problem.message}",
                    "keyword": "filter",
                }
            )
    try:
        parse_retry(body.get("retry"), settings)
    except InvalidRetry as exc:
        found.append(
            {
                "path": f"/retry{exc.path}",
                "message": f"retry{exc.path}: {exc.message}",
                "keyword": "retry",
            }
        )
    return found


async def _check_url_and_topics(request: web.Request, body: dict[str, Any]) -> None:
    """The rules a schema cannot express: a permitted target URL, catalog topics, a
    compilable filter and a retry override the operator allows."""
    found = await _url_problems(body.get("url"), request.app[SETTINGS])
    found += await _topic_problems(request, body.get("topics"))
    found += _subscription_problems(body, request.app[SETTINGS])
    if found:
        raise validation_failed(found)


def _check_in_flight(max_in_flight: int, settings: Settings) -> None:
    if max_in_flight > settings.max_in_flight_per_webhook:
        raise invalid_field(
            "/max_in_flight",
            f"max_in_flight must be at most {settings.max_in_flight_per_webhook}"
            " (HOOKLANE_MAX_IN_FLIGHT_PER_WEBHOOK)",
            "maximum",
        )


async def create_from_body(
    request: web.Request, body: dict[str, Any]
) -> tuple[store.Webhook, str | None]:
    """Create the caller's webhook from a schema-valid ``body`` with every REST rule.

    Returns the webhook and its secret when it was generated (to be shown once), else None.
    Shared by ``POST /webhooks`` and the portal's form.
    """
    settings = request.app[SETTINGS]
    await _check_url_and_topics(request, body)
    delivery_options = await checked_options(body, None, settings)
    ordering = body.get("ordering", "ordered")
    max_in_flight = 1
    if ordering == "unordered":
        max_in_flight = body.get("max_in_flight", settings.max_in_flight_per_webhook)
        _check_in_flight(max_in_flight, settings)
    secret = delivery_options.pop("secret", body.get("secret"))  # a v1a private key
    generated = secret is None
    if secret is None:
        secret = generate_secret()
    webhook = await store.create_webhook(
        request.app[POOL],
        request.app[SECRET_BOX],
        tenant_id=tenant_id(request),
        url=body["url"],
        topics=body["topics"],
        secret=secret,
        name=body.get("name"),
        state=body.get("state", "ENABLED"),
        api_version=body.get("api_version", "v1.0"),
        ordering=ordering,
        max_in_flight=max_in_flight,
        filter=body.get("filter"),
        rate_limit=body.get("rate_limit"),
        retry=body.get("retry"),
        delivery_options=delivery_options,
    )
    log.info("webhook.created", webhook_id=webhook.id, tenant_id=webhook.tenant_id)
    return webhook, secret if generated else None


async def create(request: web.Request) -> web.Response:
    """POST /webhooks → 201 with the webhook (and ``secret`` if it was generated)."""
    body = await read_json(request, "webhook_create")
    webhook, generated = await create_from_body(request, body)
    payload = webhook_json(webhook)
    if generated is not None:
        payload["secret"] = generated  # the only time it is ever shown
    return json_response(payload, status=201, headers={"Location": f"/webhooks/{webhook.id}"})


def after_cursor(request: web.Request) -> tuple[datetime, str] | None:
    """The keyset position of the ``cursor`` query parameter of a webhook list, or 400."""
    cursor = request.query.get("cursor")
    if not cursor:
        return None
    try:
        created_at, webhook_id = decode_cursor(cursor)
        return datetime.fromisoformat(created_at), str(webhook_id)
    except (ValueError, TypeError):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API issued") from None


def next_cursor(webhooks: Sequence[store.Webhook], more: bool) -> str | None:
    """The cursor of the page after ``webhooks`` (None on the last page)."""
    if not more:
        return None
    last = webhooks[-1]
    return encode_cursor([last.created_at.isoformat(), last.id])


async def list_(request: web.Request) -> web.Response:
    """GET /webhooks?limit&cursor&topic&state → a page, newest first."""
    limit = page_limit(request)
    after = after_cursor(request)
    topic = request.query.get("topic")
    if topic is not None and not TOPIC_NAME.match(topic):
        raise invalid_field("topic", f"{topic!r} is not a topic name", "topic")
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise invalid_field("state", "state must be ENABLED, PAUSED or DISABLED", "enum")
    pool = request.app[POOL]
    webhooks, more = await store.list_webhooks(
        pool, tenant_id(request), limit=limit, after=after, topic=topic, state=state
    )
    backlog = await backlog_sizes(pool, [webhook.id for webhook in webhooks])
    return json_response(
        {
            "data": [webhook_json(w, backlog.get(w.id, 0)) for w in webhooks],
            "next_cursor": next_cursor(webhooks, more),
        }
    )


async def read(request: web.Request) -> web.Response:
    """GET /webhooks/{id}."""
    webhook = await webhook_or_404(request)
    backlog = await backlog_sizes(request.app[POOL], [webhook.id])
    return json_response(webhook_json(webhook, backlog.get(webhook.id, 0)))


async def update_from_body(
    request: web.Request, current: store.Webhook, body: dict[str, Any]
) -> store.Webhook:
    """Apply a schema-valid partial update ``body`` to ``current`` with every REST rule.

    Shared by ``POST /webhooks/{id}`` and the portal (edit, enable/disable, rotate).
    """
    settings = request.app[SETTINGS]
    await _check_url_and_topics(request, body)
    changes = dict(body) | await checked_options(body, current, settings)
    changes.pop("rotate_signing_key", None)
    ordering = body.get("ordering", current.ordering)
    if ordering == "ordered":
        if body.get("max_in_flight", 1) != 1:
            raise invalid_field(
                "/max_in_flight",
                "an ordered webhook has exactly one request in flight: "
                "omit max_in_flight or set ordering to unordered",
                "const",
            )
        if current.max_in_flight != 1:
            changes["max_in_flight"] = 1
    elif "max_in_flight" in body or current.ordering != "unordered":
        changes["max_in_flight"] = body.get("max_in_flight", settings.max_in_flight_per_webhook)
        _check_in_flight(changes["max_in_flight"], settings)
    webhook = await store.update_webhook(
        request.app[POOL], request.app[SECRET_BOX], current.tenant_id, current.id, changes
    )
    if webhook is None:  # deleted meanwhile
        raise not_found()
    log.info(
        "webhook.updated",
        webhook_id=webhook.id,
        tenant_id=webhook.tenant_id,
        fields=sorted(body),  # names only: never the secret's value
    )
    return webhook


async def update(request: web.Request) -> web.Response:
    """POST /webhooks/{id}: partial update with the creation rules → 200."""
    current = await webhook_or_404(request)
    body = await read_json(request, "webhook_update")
    webhook = await update_from_body(request, current, body)
    backlog = await backlog_sizes(request.app[POOL], [webhook.id])
    return json_response(webhook_json(webhook, backlog.get(webhook.id, 0)))


async def delete_or_404(request: web.Request, webhook_id: str) -> None:
    """Delete the caller's webhook ``webhook_id``, or 404 (REST and portal)."""
    caller = tenant_id(request)
    if not await store.delete_webhook(request.app[POOL], caller, webhook_id):
        raise not_found()
    log.info("webhook.deleted", webhook_id=webhook_id, tenant_id=caller)


async def delete(request: web.Request) -> web.Response:
    """DELETE /webhooks/{id} → 204."""
    await delete_or_404(request, request.match_info["id"])
    return web.Response(status=204)


def setup_routes(app: web.Application) -> None:
    """Register the /webhooks routes."""
    app.router.add_post("/webhooks", create)
    app.router.add_get("/webhooks", list_, allow_head=False)
    app.router.add_get("/webhooks/{id}", read, allow_head=False)
    app.router.add_post("/webhooks/{id}", update)
    app.router.add_delete("/webhooks/{id}", delete)
