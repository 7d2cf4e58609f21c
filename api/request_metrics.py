"""The API's request metrics: ``http_requests_total`` and ``http_request_duration_seconds``.

Labelled by the route *template* (``/webhooks/{webhook_id}``), never the raw path: ids
in paths would make one series per webhook. Requests no route matched share the
``unmatched`` label, so scanning random paths cannot grow the series either.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dispatcher.ops.metrics import ApiMetrics

UNMATCHED = "unmatched"


def route_template(request: web.Request) -> str:
    """The matched resource's canonical template, or ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def metrics_middleware(metrics: ApiMetrics) -> Middleware:
    """Count and time every request; install it outermost, to see final statuses."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500  # an exception escaping every inner middleware becomes a 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_template(request)
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.duration.labels(route).observe(time.perf_counter() - started)

    return middleware
