"""The error envelope ``{"error": {"code", "message", "details"}}`` for every failure.

Handlers raise ``ApiError``; the middleware turns it, aiohttp's own HTTP errors (404
for unknown routes, 405, 413) and anything unexpected into the envelope, so no
client ever sees an HTML page or a bare traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from api.responses import json_response
from dispatcher.delivery.secrets import UNDECRYPTABLE_FIX, SecretKeyError
from dispatcher.messages.wire import MAX_EVENT_BYTES
from dispatcher.store import db

log = structlog.get_logger(__name__)

MAX_BODY = MAX_EVENT_BYTES  # one limit end to end: what the deliveries topic carries
# What a 503 for an unavailable database tells clients to wait before retrying.
RETRY_AFTER_S = 1

# aiohttp's own errors, as (code, message).
_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "the request is malformed"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "the route does not accept this method"),
    413: ("payload_too_large", f"the body is larger than {MAX_BODY} bytes (1 MiB)"),
}


class ApiError(Exception):
    """A client error with its HTTP status, stable ``code``, message and details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def not_found(what: str = "webhook") -> ApiError:
    """The 404 for a missing resource (another tenant's looks exactly the same)."""
    return ApiError(404, "not_found", f"no such {what}")


def validation_failed(details: list[dict[str, Any]], message: str | None = None) -> ApiError:
    """The 422 for bodies or parameters that parse but are not acceptable."""
    first = details[0]["message"] if details else "the request is not valid"
    return ApiError(422, "validation_failed", message or first, details)


def invalid_field(path: str, message: str, keyword: str = "value") -> ApiError:
    """A 422 about one field (``path`` is a JSON pointer such as ``/url``)."""
    return validation_failed([{"path": path, "message": message, "keyword": keyword}])


def error_response(error: ApiError) -> web.Response:
    """The envelope of ``error``."""
    envelope = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    return json_response(envelope, status=error.status, headers=error.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure of ``handler`` as the error envelope."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_ERRORS.get(exc.status, ("http_error", exc.reason))
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(ApiError(exc.status, code, message, headers=headers))
    except asyncpg.CharacterNotInRepertoireError:
        # The last line of defence: input checks refuse NUL where they know a value
        # reaches Postgres (json_limits, the portal's forms); one they missed is still
        # the client's mistake, not ours.
        log.warning("api.nul_character_reached_the_database", method=request.method)
        return error_response(
            ApiError(400, "invalid_character", "the request holds a NUL character")
        )
    except SecretKeyError as exc:
        # A stored secret no key of HOOKLANE_SECRET_KEY opens: an operator's key
        # problem (a rotation done out of order), not the caller's and not a bug.
        log.error(
            "api.secret_undecryptable",
            method=request.method,
            path=request.path,
            error=str(exc),
            fix=UNDECRYPTABLE_FIX,
        )
        return error_response(
            ApiError(
                503,
                "secret_unavailable",
                "a stored webhook secret cannot be decrypted with this server's key;"
                " the operator must fix HOOKLANE_SECRET_KEY (nothing was sent or changed)",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        )
    except Exception as exc:
        if db.unavailable(exc):
            # Postgres is away (restarting, unreachable): nothing was changed or lost,
            # so the client is told to retry rather than shown an internal error.
            log.warning(
                "api.database_unavailable",
                method=request.method,
                path=request.path,
                error=f"{type(exc).__name__}: {exc}",
            )
            return error_response(
                ApiError(
                    503,
                    "unavailable",
                    "the database is unavailable; retry",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            )
        # The plain traceback, not exc_info: console renderers may print frame locals,
        # and a handler's locals can hold a webhook secret.
        log.error(
            "api.unhandled_error",
            method=request.method,
            path=request.path,
            error=type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)),
        )
        return error_response(ApiError(500, "internal_error", "an unexpected error happened"))
