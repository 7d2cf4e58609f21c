"""Endpoint authentication (DESIGN.md §11 ``auth``): the ``Authorization`` of a delivery.

``basic`` and ``bearer`` are fixed headers. ``oauth2_client_credentials`` fetches a
token from the webhook's token URL (RFC 6749 §4.4, client authenticated with HTTP
Basic) through the deliverer's own sender, so the token request gets the same
connect-time SSRF guard, egress proxy and timeout as deliveries. The token is kept in
the webhook's ``TokenSlot`` (which lives as long as the deliverer's cached target)
until ``REFRESH_MARGIN`` before it expires; a 401 from the receiver replaces it once.

::

    DeliveryError
    └── TokenError      (retriable) the token endpoint gave no usable token
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from dispatcher.delivery.failures import DeliveryError
from dispatcher.delivery.http.sender import Sender

# A token is replaced this long before it expires (or at a tenth of a short lifetime).
REFRESH_MARGIN_S = 30.0
# When the token endpoint does not say (``expires_in`` absent).
DEFAULT_LIFETIME_S = 300.0
FORM = "application/x-www-form-urlencoded"


class TokenError(DeliveryError):
    """The OAuth token endpoint failed or answered without a usable access token."""


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """``Authorization: Basic``."""

    username: str
    password: str = field(repr=False)
    type = "basic"

    def shown(self) -> dict[str, str]:
        return {"type": self.type, "username": self.username}

    @property
    def secret(self) -> str:
        return self.password


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """``Authorization: Bearer`` with a fixed token."""

    token: str = field(repr=False)
    type = "bearer"

    def shown(self) -> dict[str, str]:
        return {"type": self.type}

    @property
    def secret(self) -> str:
        return self.token


class TokenSlot:
    """The current OAuth token of one webhook; one fetch at a time."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.expires_at = 0.0
        self._lock: asyncio.Lock | None = None

    def fresh(self, now: float) -> str | None:
        """The token while it is valid, else None."""
        return self.token if self.token is not None and now < self.expires_at else None

    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def keep(self, token: str, lifetime: float, now: float) -> None:
        self.token = token
        self.expires_at = now + lifetime - min(REFRESH_MARGIN_S, lifetime / 10)

    def forget(self, token: str) -> None:
        """Drop ``token`` (the receiver refused it), unless another already replaced it."""
        if self.token == token:
            self.token = None


@dataclass(frozen=True, slots=True)
class OAuth2ClientCredentials:
    """A token from ``token_url`` for ``client_id``/``client_secret`` (and ``scope``)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    tokens: TokenSlot = field(default_factory=TokenSlot, compare=False, repr=False)
    type = "oauth2_client_credentials"

    def shown(self) -> dict[str, str]:
        shown = {"type": self.type, "token_url": self.token_url, "client_id": self.client_id}
        return shown if self.scope is None else {**shown, "scope": self.scope}

    @property
    def secret(self) -> str:
        return self.client_secret


EndpointAuth = BasicAuth | BearerAuth | OAuth2ClientCredentials


def auth_from(shown: Mapping[str, Any], secret: str) -> EndpointAuth:
    """The auth of a stored (or API) ``shown`` object and its ``secret`` member."""
    kind = shown["type"]
    if kind == "basic":
        return BasicAuth(shown["username"], secret)
    if kind == "bearer":
        return BearerAuth(secret)
    if kind == "oauth2_client_credentials":
        return OAuth2ClientCredentials(
            shown["token_url"], shown["client_id"], secret, shown.get("scope")
        )
    raise ValueError(f"unknown auth type {kind!r}")


SECRET_MEMBERS = {
    "basic": "password",
    "bearer": "token",
    "oauth2_client_credentials": "client_secret",
}


async def authorization(
    sender: Sender,
    auth: EndpointAuth,
    clock: Callable[[], float] = time.time,
    refused: str | None = None,
) -> str:
    """The ``Authorization`` value for one attempt; ``refused``: the receiver's 401 to it."""
    if isinstance(auth, BasicAuth):
        return _basic(auth.username, auth.password)
    if isinstance(auth, BearerAuth):
        return "Bearer " + auth.token
    slot = auth.tokens
    if refused is not None:
        slot.forget(refused.removeprefix("Bearer "))
    token = slot.fresh(clock())
    if token is None:
        async with slot.lock():
            token = slot.fresh(clock())  # another attempt may have fetched it meanwhile
            if token is None:
                token, lifetime = await fetch_token(sender, auth)
                slot.keep(token, lifetime, clock())
    return "Bearer " + token


async def fetch_token(sender: Sender, auth: OAuth2ClientCredentials) -> tuple[str, float]:
    """A new access token and its lifetime in seconds; TokenError when there is none."""
    form = {"grant_type": "client_credentials"}
    if auth.scope:
        form["scope"] = auth.scope
    headers = {
        "Content-Type": FORM,
        "Accept": "application/json",
        # RFC 6749 §2.3.1: each part form-encoded before the Basic encoding.
        "Authorization": _basic(quote(auth.client_id, safe=""), quote(auth.client_secret, safe="")),
    }
    # Token requests are not delivery attempts: past the metering wrapper, if any.
    plain: Sender = getattr(sender, "inner", sender)
    where = f"token endpoint {auth.token_url}"
    try:
        response = await plain.send(auth.token_url, urlencode(form).encode(), headers)
    except DeliveryError as exc:
        raise TokenError(f"{where}: {exc.error_class}: {exc}") from exc
    if not response.ok:
        raise TokenError(f"{where} answered HTTP {response.status}")
    try:
        answer = orjson.loads(response.body)
        token = answer["access_token"]
        lifetime = float(answer.get("expires_in", DEFAULT_LIFETIME_S))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise TokenError(f"{where} answered without a JSON access_token") from None
    if not isinstance(token, str) or not token or lifetime <= 0:
        raise TokenError(f"{where} answered without a usable access_token")
    return token, lifetime
