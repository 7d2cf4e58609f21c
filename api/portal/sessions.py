"""Portal access: one-time links, the session cookie, CSRF, and the portal middleware.

- ``POST /portal/sessions`` (Bearer API key, JSON) → 201 ``{"url", "expires_at"}``.
- ``GET /portal/login/{token}`` exchanges the link once for a session cookie and lands
  on the fixed page ``/portal/webhooks`` (no redirect target is ever read from the
  request). The landing is a same-origin refresh rather than a 303: a SameSite=Strict
  cookie set during a cross-site navigation is not sent on its redirects, so a link
  clicked in the operator's dashboard would otherwise arrive signed out.
- The cookie is HttpOnly, SameSite=Strict, path ``/portal/``, and Secure when the
  request came over HTTPS: ``request.secure`` or ``X-Forwarded-Proto: https`` from a
  TLS-terminating proxy. Trusting that header is safe here because it can only add
  the flag (a forged value makes the cookie stricter, never weaker).
- Every POST to a portal page must carry the session's CSRF token (``csrf_token``
  form field); without it the request is refused with 403 before any handler runs.
"""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from api.app_keys import POOL, SETTINGS, TENANT_ID
from api.auth import api_key_id, is_portal_page, route_path, tenant_id
from api.errors import ApiError
from api.portal.pages import (
    SESSION,
    csrf_token,
    error_page,
    render,
    security_headers,
    see_other,
    static,
)
from api.responses import json_response, rfc3339
from dispatcher.messages.json_limits import NUL
from dispatcher.store import portal as store

log = structlog.get_logger(__name__)

COOKIE = "hooklane_portal"
PORTAL_PREFIX = "/portal/"
LANDING = "/portal/webhooks"
# Reached without a session: the link exchange and the static files.
OPEN_PREFIXES = ("/portal/login/", "/portal/static/")


def base_url(request: web.Request) -> str:
    """The origin links are built on: the request's, HTTPS when a proxy says so."""
    scheme = "https" if is_https(request) else request.scheme
    return f"{scheme}://{request.host}"


def is_https(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a TLS proxy)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


async def create(request: web.Request) -> web.Response:
    """POST /portal/sessions → 201 ``{"url", "expires_at"}``: a one-time portal link."""
    link = await store.create_link(
        request.app[POOL],
        tenant_id(request),
        request.app[SETTINGS].portal_link_ttl,
        base_url(request),
        api_key_id=api_key_id(request),  # revoking the key ends the link and its session
    )
    log.info("portal.link_created", tenant_id=tenant_id(request))  # never the token
    return json_response({"url": link.url, "expires_at": rfc3339(link.expires_at)}, status=201)


async def login(request: web.Request) -> web.Response:
    """GET /portal/login/{token}: use the link up, set the session cookie, land."""
    pool = request.app[POOL]
    grant = await store.redeem_link(pool, request.match_info["token"])
    if grant is None:
        log.info("portal.link_refused")
        return error_page(
            request,
            403,
            "This portal link is expired or was already used, or its API key was revoked."
            " Ask for a new link.",
        )
    session = await store.create_session(pool, grant)
    log.info("portal.signed_in", tenant_id=grant.tenant_id)
    response = render(request, "login.html", {"landing": LANDING})
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(store.SESSION_TTL_S),
        path=PORTAL_PREFIX,
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """POST /portal/logout: end the session and forget the cookie."""
    await store.end_session(request.app[POOL], request[SESSION])
    response = render(
        request, "error.html", {"title": "Signed out", "message": "You are signed out."}
    )
    response.del_cookie(COOKIE, path=PORTAL_PREFIX)
    return response


async def _authenticate(request: web.Request) -> web.Response | None:
    """Resolve the session and check CSRF; a refusal page, or None to go on."""
    if route_path(request).startswith(OPEN_PREFIXES):
        return None
    token = request.cookies.get(COOKIE)
    tenant = await store.session_tenant(request.app[POOL], token) if token else None
    if token is None or tenant is None:
        return error_page(
            request, 401, "Your portal session has ended. Open a new portal link to sign in."
        )
    request[SESSION] = token
    request[TENANT_ID] = tenant
    if request.method == "POST":
        form = await request.post()
        sent = form.get("csrf_token")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(token)):
            log.warning("portal.csrf_refused", tenant_id=tenant, path=request.path)
            return error_page(
                request, 403, "The form was refused (missing or stale CSRF token). Reload the page."
            )
        # The JSON rule of dispatcher.messages.json_limits, for every portal form at once:
        # Postgres text cannot hold a NUL, and no field has a use for one.
        field = next((name for name, value in form.items() if _has_nul(name, value)), None)
        if field is not None:
            return error_page(
                request, 422, f"The field {field.replace(NUL, '')!r} holds a NUL character."
            )
    return None


def _has_nul(name: str, value: object) -> bool:
    return NUL in name or (isinstance(value, str) and NUL in value)


@web.middleware
async def portal_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session, CSRF, HTML error pages and security headers for every portal page."""
    if not is_portal_page(route_path(request)):
        return await handler(request)
    response: web.StreamResponse
    try:
        refused = await _authenticate(request)
        response = refused if refused is not None else await handler(request)
    except ApiError as exc:
        response = error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_page(request, exc.status, exc.reason)
    security_headers(response, request.app[SETTINGS])
    return response


async def home(request: web.Request) -> web.Response:
    """GET /portal/: the webhooks page."""
    return see_other(LANDING)


def setup_routes(app: web.Application) -> None:
    """Register the link, sign-in and static routes."""
    app.router.add_post("/portal/sessions", create)
    app.router.add_get("/portal/login/{token}", login, allow_head=False)
    app.router.add_post("/portal/logout", logout)
    app.router.add_get("/portal/", home, allow_head=False)
    app.router.add_get("/portal/static/{name}", static, allow_head=False)
