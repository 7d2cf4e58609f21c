"""OAUTHBEARER token providers (``HOOKLANE_KAFKA_OAUTH_TOKEN_PROVIDER``, DESIGN §10).

- ``client_credentials``: the OAuth 2.0 client-credentials grant against
  ``KAFKA_OAUTH_TOKEN_URL`` (client id and secret as HTTP Basic, RFC 6749 §2.3.1), the
  token cached and fetched again once 80% of its lifetime has passed;
- ``aws_msk_iam``: Amazon MSK's IAM tokens from AWS's own signer
  (``pip install 'hooklane[msk-iam]'``), the region read from the brokers' host names;
- ``module:callable``: a function of no arguments returning the token (or an awaitable
  of it), for any other identity provider.

Errors name the token URL and the HTTP status, never the client secret.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import inspect
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiokafka.abc import AbstractTokenProvider

from dispatcher.settings import PREFIX, Settings

# A token is fetched again after this fraction of its lifetime (expires_in).
REFRESH_AT = 0.8
DEFAULT_LIFETIME_S = 300.0
REQUEST_TIMEOUT_S = 10.0
_MSK_REGION = re.compile(r"\.kafka(?:-serverless)?\.([a-z0-9-]+)\.amazonaws\.com(?::\d+)?$")


class OAuthTokenError(RuntimeError):
    """No token could be obtained; the message names the endpoint and the cause."""


class ClientCredentials(AbstractTokenProvider):  # type: ignore[misc]
    """Tokens from an OAuth 2.0 token endpoint, cached until 80% of their lifetime."""

    def __init__(self, url: str, client_id: str, client_secret: str, scope: str | None) -> None:
        self.url = url
        credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}
        self._scope = scope
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:  # never the secret
        return f"ClientCredentials(url={self.url!r})"

    async def token(self) -> str:
        if self._token is None or time.monotonic() >= self._refresh_at:
            self._token, lifetime = await self._fetch()
            self._refresh_at = time.monotonic() + REFRESH_AT * lifetime
        return self._token

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.url, data=form, headers=self._headers) as response,
            ):
                if response.status != 200:
                    raise OAuthTokenError(
                        f"token endpoint {self.url} answered HTTP {response.status}"
                    )
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OAuthTokenError(
                f"token endpoint {self.url}: {type(exc).__name__}: {exc}"
            ) from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise OAuthTokenError(f"token endpoint {self.url} answered without an access_token")
        lifetime = body.get("expires_in", DEFAULT_LIFETIME_S)
        return token, float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_LIFETIME_S


class CallableTokens(AbstractTokenProvider):  # type: ignore[misc]
    """Tokens from a ``module:callable`` (sync or async, no arguments)."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._function = function

    async def token(self) -> str:
        token = self._function()
        if inspect.isawaitable(token):
            token = await token
        return str(token)


def msk_region(bootstrap_servers: str) -> str:
    """The AWS region in an MSK broker address (``b-1.x.kafka.eu-west-1.amazonaws.com``)."""
    for address in bootstrap_servers.split(","):
        match = _MSK_REGION.search(address.strip())
        if match:
            return match.group(1)
    raise OAuthTokenError(
        f"aws_msk_iam: no AWS region in {PREFIX}KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers}"
        " (expected MSK broker addresses like b-1.name.kafka.REGION.amazonaws.com:9098)"
    )


def _msk_iam(bootstrap_servers: str) -> CallableTokens:
    region = msk_region(bootstrap_servers)
    try:
        signer = importlib.import_module("aws_msk_iam_sasl_signer")
    except ImportError:
        raise OAuthTokenError(
            "aws_msk_iam needs AWS's signer: pip install aws-msk-iam-sasl-signer-python"
        ) from None

    async def token() -> str:
        value, _expiry_ms = await asyncio.to_thread(
            signer.MSKAuthTokenProvider.generate_auth_token, region
        )
        return str(value)

    return CallableTokens(token)


def load_callable(reference: str) -> Callable[[], Any]:
    """The function named by ``module:callable``."""
    module_name, _, attribute = reference.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise OAuthTokenError(
            f"{PREFIX}KAFKA_OAUTH_TOKEN_PROVIDER={reference}: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(function):
        raise OAuthTokenError(f"{PREFIX}KAFKA_OAUTH_TOKEN_PROVIDER={reference}: not callable")
    return function  # type: ignore[no-any-return]


def token_provider(settings: Settings) -> AbstractTokenProvider:
    """The provider ``KAFKA_OAUTH_TOKEN_PROVIDER`` names (validated by ``Settings``)."""
    kind = settings.kafka_oauth_token_provider or ""
    if kind == "client_credentials":
        assert settings.kafka_oauth_token_url and settings.kafka_oauth_client_id
        return ClientCredentials(
            settings.kafka_oauth_token_url,
            settings.kafka_oauth_client_id,
            settings.kafka_oauth_client_secret or "",
            settings.kafka_oauth_scope,
        )
    if kind == "aws_msk_iam":
        return _msk_iam(settings.kafka_bootstrap_servers or "")
    return CallableTokens(load_callable(kind))
