"""The tenant portal: server-rendered pages under ``/portal/`` (DESIGN.md §6).

``setup_routes(app)`` is the one call ``api.app`` makes: it registers the Jinja2
templates (autoescaped), the session middleware and every portal route. The pages use
the REST API's own functions (``api.webhooks``, ``api.trigger``, ``api.attempts``), so
each rule — validation, SSRF checks, tenant isolation, error messages — exists once.
"""

from __future__ import annotations

from aiohttp import web

from api.portal import attempt_pages, event_pages, pages, sessions, topic_pages, webhook_pages


def setup_routes(app: web.Application) -> None:
    """Register the portal's templates, middleware and routes on the API app."""
    pages.setup_templates(app)
    app.middlewares.append(sessions.portal_middleware)
    for module in (sessions, webhook_pages, attempt_pages, topic_pages, event_pages):
        module.setup_routes(app)
