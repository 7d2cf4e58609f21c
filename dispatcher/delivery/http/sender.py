"""The one narrow seam for HTTP: ``Sender.send(url, body, headers) -> Response``.

The deliverer and the API's test trigger both use it; tests can swap it.
``make_sender(settings)`` (``dispatcher.delivery.http.factory``) builds the production
one ``HOOKLANE_SENDER`` names: the lean ``dispatcher.delivery.http.lean.HttpSender``
(default) or ``AiohttpSender`` (here). Both keep
keep-alive pools per host and a DNS cache, verify TLS, guard connects against SSRF,
follow no redirects and read at most ``MAX_RESPONSE_BODY`` bytes; the same sender suite
(tests/test_sender.py) runs against both.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from dispatcher.delivery.client_certificate import ClientCertificate
from dispatcher.delivery.failures import (
    BlockedDestination,
    ConnectError,
    DeliveryError,
    DeliveryTimeout,
    ProtocolError,
    TLSError,
)
from dispatcher.delivery.http.client_tls import ClientContexts
from dispatcher.delivery.http.ssrf import GuardedResolver, check_literal_host
from dispatcher.settings import Settings
from dispatcher.values import immutable

MAX_RESPONSE_BODY = 4096
USER_AGENT = "Hooklane/0.1 (+webhooks)"
# The response headers kept for the attempt log: the first 20, 2 KiB in all.
MAX_RESPONSE_HEADERS = 20
MAX_RESPONSE_HEADER_BYTES = 2048
# Not kept: a receiver's session cookies are none of the attempt log's business.
UNRECORDED_HEADERS = frozenset({"set-cookie"})

Headers = tuple[tuple[str, str], ...]


def bound_headers(pairs: Iterable[tuple[str, str]]) -> Headers:
    """The first response headers that fit ``MAX_RESPONSE_HEADERS`` and ``..._BYTES``.

    In arrival order; a header that would overflow the byte budget ends the list, so
    what is kept is always a prefix (minus ``UNRECORDED_HEADERS``) of what was sent.
    """
    kept: list[tuple[str, str]] = []
    room = MAX_RESPONSE_HEADER_BYTES
    for name, value in pairs:
        if len(kept) == MAX_RESPONSE_HEADERS:
            break
        if name.lower() in UNRECORDED_HEADERS:
            continue
        room -= len(name) + len(value)
        if room < 0:
            break
        kept.append((name, value))
    return tuple(kept)


@immutable
class Response:
    """A receiver's answer: status, the headers that matter, and a capped body."""

    status: int
    body: bytes = b""
    retry_after: str | None = None
    headers: Headers = ()  # bounded (``bound_headers``), for the attempt log

    @property
    def ok(self) -> bool:
        """True for any 2xx."""
        return 200 <= self.status < 300


class Sender(Protocol):
    """POSTs one signed body; raises DeliveryError when no complete answer arrives."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...


class CertificateSender(Sender, Protocol):
    """A sender that can present a client certificate in the TLS handshake."""

    async def send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        client_certificate: ClientCertificate | None = None,
    ) -> Response: ...


@runtime_checkable
class ClosableSender(CertificateSender, Protocol):
    """A production sender: it owns connections, so its owner closes it."""

    async def close(self) -> None: ...


class AiohttpSender:
    """The production sender. Create inside a running loop; ``close()`` when done.

    Unless ``allow_private_targets`` is on, the connect-time SSRF guard is active: every
    DNS answer goes through ``GuardedResolver`` (wrapping ``resolver``, aiohttp's
    default when None) and IP-literal hosts are checked before the request, so a
    forbidden address raises ``BlockedDestination`` and no byte is sent to it. With
    ``egress_proxy`` set, every request goes through that proxy (CONNECT for https),
    which resolves targets: IP literals are still checked here, names by the proxy. A given
    ``connector`` must bring its own resolver: the guard wraps the default connector's.
    ``ssl_context`` replaces aiohttp's verifying default (e.g. a private CA);
    ``tls_factory`` makes it, and the contexts presenting client certificates.
    """

    def __init__(
        self,
        settings: Settings,
        connector: aiohttp.BaseConnector | None = None,
        resolver: AbstractResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tls_factory: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self._settings = settings
        tls_factory = tls_factory or ssl.create_default_context
        self._client_contexts = ClientContexts(tls_factory)
        if ssl_context is None and tls_factory is not ssl.create_default_context:
            ssl_context = tls_factory()
        self._timeout = aiohttp.ClientTimeout(total=settings.delivery_timeout_s)
        # Through an egress proxy the resolver only ever sees the proxy's own name (often
        # a private address); the proxy resolves targets and enforces the policy.
        self._proxy = settings.egress_proxy
        if not settings.allow_private_targets and self._proxy is None:
            resolver = GuardedResolver(settings.allowed_target_cidrs, inner=resolver)
        self._session = aiohttp.ClientSession(
            connector=connector
            or aiohttp.TCPConnector(
                limit=settings.max_in_flight,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=30,
                resolver=resolver,
                ssl=ssl_context if ssl_context is not None else True,
            ),
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            auto_decompress=False,
            raise_for_status=False,
        )

    async def send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        client_certificate: ClientCertificate | None = None,
    ) -> Response:
        """POST ``body`` to ``url``; redirects are answers, not followed."""
        # aiohttp pools connections per SSL context, so each certificate has its own.
        tls = True if client_certificate is None else self._client_contexts.get(client_certificate)
        try:
            check_literal_host(URL(url).raw_host or "", self._settings)
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False, ssl=tls, proxy=self._proxy
            ) as response:
                content = await response.content.read(MAX_RESPONSE_BODY)
                return Response(
                    response.status,
                    content,
                    response.headers.get("Retry-After"),
                    bound_headers(response.headers.items()),
                )
        except DeliveryError:
            # Includes BlockedDestination from GuardedResolver: aiohttp wraps only OSErrors
            # from a resolver (in ClientConnectorDNSError), so it arrives unwrapped.
            raise
        except TimeoutError as exc:
            raise DeliveryTimeout("no answer within the delivery timeout") from exc
        except (
            aiohttp.ClientConnectorCertificateError,
            aiohttp.ClientSSLError,
            ssl.SSLError,
        ) as exc:
            raise TLSError(str(exc) or "TLS failure") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedDestination):
                raise exc.os_error from exc
            raise ConnectError(str(exc)) from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError) as exc:
            # NonHttpUrlClientError (ftp://...) is no InvalidURL: without it, a ConnectError.
            raise BlockedDestination(f"invalid URL: {exc}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        except aiohttp.ClientResponseError as exc:
            raise ProtocolError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        await self._session.close()
