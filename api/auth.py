"""Bearer API keys: every route needs one except the health check and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from api.app_keys import API_KEY_ID, POOL, TENANT_ID
from api.errors import ApiError
from dispatcher.store.api_key_store import caller_for_api_key

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hooklane"'}


def is_portal_page(path: str) -> bool:
    """Portal pages sign in with a session cookie (api.portal.sessions), not an API key.

    ``POST /portal/sessions`` is the exception: the operator's backend calls it with a key.
    """
    return path.startswith("/portal/") and path != "/portal/sessions"


def route_path(request: web.Request) -> str:
    """The template of the route the router matched, else the request's path.

    Decisions about who authenticates how follow the route that will run, never a raw
    path that could dress up as another (``/portal/../webhooks``).
    """
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the caller's tenant from its API key, or answer 401."""
    # Unmatched routes fall through so they answer 404/405 rather than 401.
    if (
        request.path in PUBLIC_PATHS
        or is_portal_page(route_path(request))
        or request.match_info.http_exception is not None
    ):
        return await handler(request)
    api_key = bearer_token(request.headers.get("Authorization"))
    if api_key is None:
        raise ApiError(
            401,
            "unauthorized",
            "send your API key as `Authorization: Bearer <key>`",
            headers=_CHALLENGE,
        )
    caller = await caller_for_api_key(request.app[POOL], api_key)
    if caller is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key", headers=_CHALLENGE)
    request[TENANT_ID] = caller.tenant_id
    request[API_KEY_ID] = caller.api_key_id
    return await handler(request)


def tenant_id(request: web.Request) -> str:
    """The authenticated tenant of ``request``."""
    return request[TENANT_ID]


def api_key_id(request: web.Request) -> str:
    """The id of the API key that authenticated ``request`` (API routes only)."""
    return request[API_KEY_ID]
