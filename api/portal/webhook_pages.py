"""Portal pages of a tenant's webhooks: list, create, edit, enable/disable, rotate, delete.

Form input becomes the same JSON body the REST API takes, is validated against the
same schema and goes through the same functions (``api.webhooks``), so a form error
reads exactly like the API's 422.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.app_keys import POOL, SCHEMAS
from api.auth import tenant_id
from api.errors import ApiError
from api.portal.pages import render, see_other
from api.portal.webhook_detail import detail_page, health
from api.webhooks import (
    after_cursor,
    create_from_body,
    delete_or_404,
    next_cursor,
    update_from_body,
    webhook_or_404,
)
from dispatcher.delivery.secrets import generate_secret
from dispatcher.store import webhook_store as store
from dispatcher.store.topic_store import list_topics

PAGE = 20


async def list_page(request: web.Request) -> web.Response:
    """GET /portal/webhooks: the tenant's webhooks with their health, newest first."""
    webhooks, more = await store.list_webhooks(
        request.app[POOL], tenant_id(request), limit=PAGE, after=after_cursor(request)
    )
    context = {
        "webhooks": webhooks,
        "health": await health(request, webhooks),
        "next_cursor": next_cursor(webhooks, more),
    }
    return render(request, "webhooks.html", context)


async def _form_context(request: web.Request, **extra: Any) -> dict[str, Any]:
    topics = await list_topics(request.app[POOL])
    return {"catalog": [topic.name for topic in topics], "errors": [], **extra}


def _form_body(form: Any, *, with_state: bool) -> dict[str, Any]:
    """A form post as the REST body (same field names, same schema)."""
    body: dict[str, Any] = {
        "url": str(form.get("url", "")).strip(),
        "topics": [str(topic) for topic in form.getall("topics", [])],
        "name": str(form.get("name", "")).strip() or None,
    }
    if with_state and "state" in form:
        body["state"] = str(form["state"])
    return body


async def new_form(request: web.Request) -> web.Response:
    """GET /portal/webhooks/new: the creation form."""
    values = {"url": "", "topics": [], "name": ""}
    return render(request, "webhook_form.html", await _form_context(request, values=values))


async def create(request: web.Request) -> web.Response:
    """POST /portal/webhooks: create; the page shows the generated secret this once."""
    body = _form_body(await request.post(), with_state=False)
    try:
        request.app[SCHEMAS].validate("webhook_create", body)
        webhook, secret = await create_from_body(request, body)
    except ApiError as exc:
        if exc.status != 422:
            raise
        context = await _form_context(request, values=body, errors=exc.details or [exc.message])
        return render(request, "webhook_form.html", context, status=422)
    return await detail_page(request, webhook, secret=secret, status=201)


async def detail(request: web.Request) -> web.Response:
    """GET /portal/webhooks/{id}."""
    return await detail_page(request, await webhook_or_404(request))


async def edit_form(request: web.Request) -> web.Response:
    """GET /portal/webhooks/{id}/edit."""
    webhook = await webhook_or_404(request)
    values = {"url": webhook.url, "topics": list(webhook.topics), "name": webhook.name or ""}
    context = await _form_context(request, values=values, webhook=webhook)
    return render(request, "webhook_form.html", context)


async def update(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}: save the edit form."""
    current = await webhook_or_404(request)
    body = _form_body(await request.post(), with_state=False)
    try:
        request.app[SCHEMAS].validate("webhook_update", body)
        await update_from_body(request, current, body)
    except ApiError as exc:
        if exc.status != 422:
            raise
        errors = exc.details or [exc.message]
        context = await _form_context(request, values=body, webhook=current, errors=errors)
        return render(request, "webhook_form.html", context, status=422)
    return see_other(f"/portal/webhooks/{current.id}")


async def set_state(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}/state: enable or disable."""
    current = await webhook_or_404(request)
    body = {"state": (await request.post()).get("state")}
    request.app[SCHEMAS].validate("webhook_update", body)
    await update_from_body(request, current, body)
    return see_other(f"/portal/webhooks/{current.id}")


async def rotate(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}/rotate: a new generated secret, shown this once."""
    current = await webhook_or_404(request)
    if current.signature_scheme == "v1a":  # a new key pair: nothing secret to show
        webhook = await update_from_body(request, current, {"rotate_signing_key": True})
        return await detail_page(request, webhook, rotated=True)
    secret = generate_secret()
    webhook = await update_from_body(request, current, {"secret": secret})
    return await detail_page(request, webhook, secret=secret, rotated=True)


async def delete_form(request: web.Request) -> web.Response:
    """GET /portal/webhooks/{id}/delete: the confirmation."""
    return render(request, "delete.html", {"webhook": await webhook_or_404(request)})


async def delete(request: web.Request) -> web.Response:
    """POST /portal/webhooks/{id}/delete: delete, back to the list."""
    await delete_or_404(request, request.match_info["id"])
    return see_other("/portal/webhooks")


def setup_routes(app: web.Application) -> None:
    """Register the webhook pages."""
    app.router.add_get("/portal/webhooks", list_page, allow_head=False)
    app.router.add_post("/portal/webhooks", create)
    app.router.add_get("/portal/webhooks/new", new_form, allow_head=False)
    app.router.add_get("/portal/webhooks/{id}", detail, allow_head=False)
    app.router.add_post("/portal/webhooks/{id}", update)
    app.router.add_get("/portal/webhooks/{id}/edit", edit_form, allow_head=False)
    app.router.add_post("/portal/webhooks/{id}/state", set_state)
    app.router.add_post("/portal/webhooks/{id}/rotate", rotate)
    app.router.add_get("/portal/webhooks/{id}/delete", delete_form, allow_head=False)
    app.router.add_post("/portal/webhooks/{id}/delete", delete)
