"""Rendering portal pages: templates, security headers, static files and error pages.

Every portal response carries a strict Content-Security-Policy (``default-src 'self'``,
no inline script or style) and is never framed except by the operator's own origins
(``HOOKLANE_PORTAL_FRAME_ANCESTORS``). Pages can show a secret once, so none is cached.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from dispatcher.settings import Settings

HERE = Path(__file__).resolve().parent
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# Read once: the portal serves exactly these files and nothing else from disk.
STATIC_FILES = {
    path.name: (path.read_bytes(), STATIC_TYPES[path.suffix])
    for path in sorted((HERE / "static").iterdir())
    if path.suffix in STATIC_TYPES
}

SESSION = web.RequestKey("portal_session", str)
ERROR_TITLES = {
    400: "Bad request",
    401: "Signed out",
    403: "Refused",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    422: "Not valid",
    503: "Unavailable",
}


def setup_templates(app: web.Application) -> None:
    """Jinja2 with autoescaping on for every template (the pages show tenants' input)."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters={"when": when},
    )


def when(moment: datetime) -> str:
    """A timestamp as the pages show it: UTC to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from it, so nothing more is stored.

    An attacker's page cannot read the session cookie (HttpOnly, other origin), so it
    cannot compute this value either.
    """
    return hmac.new(session_token.encode(), b"hooklane-portal-csrf", hashlib.sha256).hexdigest()


def security_headers(response: web.StreamResponse, settings: Settings) -> None:
    """The portal's CSP, framing, referrer and caching headers on ``response``."""
    ancestors = settings.portal_frame_ancestors.strip()
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
        " object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors " + (ancestors or "'none'")
    )
    if not ancestors:
        # Older browsers ignore frame-ancestors; X-Frame-Options cannot list origins.
        response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    """``template`` rendered with ``context`` plus the session's CSRF token."""
    session = request.get(SESSION)
    full = {"csrf_token": csrf_token(session) if session else "", "signed_in": bool(session)}
    full.update(context)
    return aiohttp_jinja2.render_template(template, request, full, status=status)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    """The HTML page of a portal failure (another tenant's webhook looks like a missing one)."""
    title = ERROR_TITLES.get(status, "Error")
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def see_other(location: str) -> web.Response:
    """A 303 to a fixed portal path (never a URL taken from the request)."""
    assert location.startswith("/portal/")
    return web.Response(status=303, headers={"Location": location})


async def static(request: web.Request) -> web.Response:
    """GET /portal/static/{name}: the stylesheet and the script."""
    found = STATIC_FILES.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type)
