"""The lean sender: HTTP/1.1 POSTs over asyncio transports, parsed by ``httptools``.

The deliverer does one thing over HTTP (POST a small signed body, read a status and a
capped body), so it does not need a general client: per request this one writes a
cached request head plus four headers in a single ``transport.write`` and lets llhttp
(C) parse the answer, about a quarter of the CPU of aiohttp's request path.

What it guarantees, like ``AiohttpSender`` (the same sender suite runs against both):

- keep-alive pools per (scheme, host, port), LIFO, idle connections closed after
  ``KEEPALIVE_S`` and at most ``max_idle`` of them overall; at most ``max_connections``
  requests in flight;
- TLS with verification (the default context: system CAs, SNI, hostname check);
- the connect-time SSRF guard: names resolve through ``GuardedResolver`` (every
  address checked, forbidden ones dropped) and the socket connects to one of the
  checked addresses, never re-resolving; IP literals go through ``check_literal_host``;
- no redirects (a 3xx is an answer), bodies capped at ``MAX_RESPONSE_BODY``, 1xx
  interim answers skipped, Content-Length, chunked and close-delimited bodies;
- one deadline (``delivery_timeout_s``) over pool wait, DNS, connect, TLS, send and
  receive (a reused connection's exchange is timed by one sweeping timer per sender,
  ``_Deadlines``, so it may fire up to ``SWEEP_S`` late);
- failures mapped to the ``DeliveryError`` tree;
- with ``egress_proxy`` set, every connection is a CONNECT tunnel through the proxy
  (``tunnel.open_tunnel``): the sender never resolves or reaches a target itself, the
  proxy does (and must enforce the SSRF policy; IP literals are still checked here).

A reused keep-alive connection may have been closed by the receiver just as the
request went out. Such a request is retried once, on a new connection, only when the
connection was reused and closed before any byte of an answer arrived: the receiver
closed an idle connection, so it did not answer this request (a receiver that
processed it and hung up without a word would get a duplicate, which the at-least-once
contract and the stable ``webhook-id`` already allow). A fresh connection, or one that
sent any byte, is never retried.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import cast

import httptools
from aiohttp import DefaultResolver
from aiohttp.abc import AbstractResolver

from dispatcher.delivery.client_certificate import ClientCertificate
from dispatcher.delivery.failures import (
    ConnectError,
    DeliveryError,
    DeliveryTimeout,
    ProtocolError,
    TLSError,
)
from dispatcher.delivery.http.client_tls import ClientContexts
from dispatcher.delivery.http.sender import (
    MAX_RESPONSE_BODY,
    MAX_RESPONSE_HEADERS,
    Response,
    bound_headers,
)
from dispatcher.delivery.http.ssrf import GuardedResolver, check_literal_host
from dispatcher.delivery.http.target import Target, parse_target, presenting, request_bytes
from dispatcher.delivery.http.tunnel import open_tunnel
from dispatcher.settings import Settings, proxy_address

KEEPALIVE_S = 30.0  # as AiohttpSender's keepalive_timeout
DNS_TTL_S = 300.0  # as AiohttpSender's ttl_dns_cache
MAX_IDLE = 256
# At most this late (or a twentieth of the timeout) a keep-alive exchange times out.
SWEEP_S = 0.05


class _Deadlines:
    """Expires in-flight exchanges past their deadline with one sweeping timer.

    A timer per request (``asyncio.timeout``) costs more than the rest of a keep-alive
    exchange's bookkeeping. Exchanges registered here all get ``timeout`` from the
    moment they are added, so insertion order is deadline order and a sweep only looks
    at the front; it runs at most every ``tick`` seconds while anything is in flight,
    so a deadline fires up to ``tick`` late.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(SWEEP_S, timeout / 20)
        self._pending: dict[Connection, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: Connection) -> None:
        """Start ``connection``'s exchange clock."""
        loop = asyncio.get_running_loop()
        self._pending[connection] = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + self.timeout + self.tick, self._sweep)

    def discard(self, connection: Connection) -> None:
        """The exchange ended (answered, failed or expired)."""
        self._pending.pop(connection, None)

    def close(self) -> None:
        """Stop sweeping (the sender is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        self._timer = None
        pending = self._pending
        loop = asyncio.get_running_loop()
        now = loop.time()
        while pending:
            connection, deadline = next(iter(pending.items()))
            if deadline > now:
                self._timer = loop.call_at(max(deadline, now + self.tick), self._sweep)
                return
            del pending[connection]
            connection.expire()


class _Stale(ConnectError):
    """A reused connection closed before any byte of the answer: safe to retry once."""


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``request()`` sends and reads one exchange."""

    def __init__(self, key: tuple[str | int, ...]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._retry_after: str | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()
        self._received = False
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end is not the close
        self._reusable = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they quack alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the stream can no longer be trusted
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the receiver switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed:
            self._finish()  # a close-delimited body ends with the connection
        elif not self._received:
            waiter.set_exception(_Stale("the receiver closed the connection without answering"))
        else:
            waiter.set_exception(ConnectError("the receiver closed the connection mid-answer"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) <= MAX_RESPONSE_HEADERS:  # decoded and bounded at the end
            self._headers.append((name, value))
        size = len(name)
        if size == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif (size == 14 and name.lower() == b"content-length") or (
            size == 17 and name.lower() == b"transfer-encoding"
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._status >= 200:
            self._headers_done = True
            if self._status in (204, 304):
                self._framed = True

    def on_body(self, body: bytes) -> None:
        if self._status < 200:
            return
        room = MAX_RESPONSE_BODY - len(self._body)
        self._body += body[:room]
        if len(body) >= room:
            self._finish()  # the cap: the rest is never read and the connection goes

    def on_message_complete(self) -> None:
        if self._status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._reset()
            self._received = True
            return
        self._reusable = self._parser.should_keep_alive()
        self._finish()

    # the exchange

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            headers = bound_headers(
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in self._headers
            )
            waiter.set_result(Response(self._status, bytes(self._body), self._retry_after, headers))

    def _fail(self, error: DeliveryError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    async def request(self, data: bytes, deadlines: _Deadlines | None = None) -> Response:
        """Send ``data`` and wait for the answer, bounded by ``deadlines`` or the caller."""
        assert self.transport is not None
        self._reset()
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(data)
        if deadlines is not None:
            deadlines.add(self)
        try:
            return await waiter
        finally:
            self._waiter = None
            if deadlines is not None:
                deadlines.discard(self)
            if not (waiter.done() and not waiter.cancelled() and self._reusable):
                self.close()

    def expire(self) -> None:
        """The exchange's deadline passed: fail it and drop the connection."""
        self._fail(DeliveryTimeout("no answer within the delivery timeout"))

    @property
    def reusable(self) -> bool:
        """Whether the last exchange left the connection open for the next one."""
        return self._reusable and not self.closed

    def close(self) -> None:
        """Close the transport (idempotent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpSender:
    """The lean production sender (``HOOKLANE_SENDER=fast``). ``close()`` when done.

    Same constructor seams as ``AiohttpSender``: ``resolver`` (an aiohttp resolver,
    wrapped by the SSRF guard unless private targets are allowed), ``ssl_context``
    (default: ``tls_factory()``) and ``tls_factory`` (makes verifying contexts, also
    those presenting client certificates; default ``ssl.create_default_context``).
    """

    def __init__(
        self,
        settings: Settings,
        resolver: AbstractResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = MAX_IDLE,
        tls_factory: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self._settings = settings
        self._timeout = settings.delivery_timeout_s
        self._deadlines = _Deadlines(self._timeout)
        inner = resolver if resolver is not None else DefaultResolver()
        self._resolver: AbstractResolver = (
            inner
            if settings.allow_private_targets
            else GuardedResolver(settings.allowed_target_cidrs, inner=inner)
        )
        self._proxy = (
            None if settings.egress_proxy is None else proxy_address(settings.egress_proxy)
        )
        tls_factory = tls_factory or ssl.create_default_context
        self._ssl = ssl_context if ssl_context is not None else tls_factory()
        self._client_contexts = ClientContexts(tls_factory)
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._max_idle = max_idle
        self._idle: dict[tuple[str | int, ...], list[Connection]] = {}
        self._idle_count = 0
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        client_certificate: ClientCertificate | None = None,
    ) -> Response:
        """POST ``body`` to ``url``; redirects are answers, not followed."""
        target = parse_target(url)
        if client_certificate is not None:
            target = presenting(target, client_certificate)
        if target.numeric:
            check_literal_host(target.host, self._settings)
        data = request_bytes(target, body, headers)
        if not self._slots.locked():
            connection = self._checkout(target.key)
            if connection is not None:
                # The common case, a free slot and a kept-alive connection: no await
                # before the request is written, so the sweep's deadline is the whole one.
                async with self._slots:
                    try:
                        response = await connection.request(data, self._deadlines)
                    except _Stale:
                        pass  # closed while idle as the request went out: once on a new one
                    else:
                        self._release(connection)
                        return response
                # Outside the slot: ``_timed`` takes it again, under the deadline.
                return await self._timed(target, data, reuse=False)
        return await self._timed(target, data, reuse=True)

    async def _timed(self, target: Target, data: bytes, *, reuse: bool) -> Response:
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                return await self._exchange(target, data, reuse)
        except TimeoutError as exc:
            raise DeliveryTimeout("no answer within the delivery timeout") from exc

    async def _exchange(self, target: Target, data: bytes, reuse: bool) -> Response:
        connection = self._checkout(target.key) if reuse else None
        if connection is not None:
            try:
                response = await connection.request(data)
            except _Stale:
                pass  # closed while idle as the request went out: once on a new one
            else:
                self._release(connection)
                return response
        connection = await self._connect(target)
        try:
            response = await connection.request(data)
        except _Stale as exc:
            raise ConnectError(str(exc)) from None
        self._release(connection)
        return response

    def _checkout(self, key: tuple[str | int, ...]) -> Connection | None:
        idle = self._idle.get(key)
        deadline = time.monotonic() - KEEPALIVE_S
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if not connection.closed and connection.idle_since > deadline:
                return connection
            connection.close()
        return None

    def _release(self, connection: Connection) -> None:
        if not connection.reusable:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)
        self._idle_count += 1
        if self._idle_count > self._max_idle:
            self._evict()

    def _evict(self) -> None:
        """Close closed and expired idle connections, then the oldest, down to the cap."""
        deadline = time.monotonic() - KEEPALIVE_S
        pooled = [c for idle in self._idle.values() for c in idle]
        keep = sorted(
            (c for c in pooled if not c.closed and c.idle_since > deadline),
            key=lambda c: c.idle_since,
        )[-self._max_idle :]
        kept = set(map(id, keep))
        for connection in pooled:
            if id(connection) not in kept:
                connection.close()
        self._idle = {}
        for connection in keep:
            self._idle.setdefault(connection.key, []).append(connection)
        self._idle_count = len(keep)

    async def _connect(self, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        tls = self._context(target) if target.tls else None
        if self._proxy is not None:
            sock = await open_tunnel(self._proxy, target.host, target.port)
            try:
                _, tunneled = await loop.create_connection(
                    lambda: Connection(target.key),
                    sock=sock,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
            except ssl.SSLError as exc:
                sock.close()
                raise TLSError(str(exc) or "TLS failure") from exc
            except OSError as exc:
                sock.close()
                raise ConnectError(f"through the egress proxy: {exc.strerror or exc}") from exc
            return tunneled
        addresses = [target.host] if target.literal else await self._resolve(target)
        failures: list[str] = []
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: Connection(target.key),
                    address,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
            except ssl.SSLError as exc:
                raise TLSError(str(exc) or "TLS failure") from exc
            except OSError as exc:
                failures.append(f"{address}: {exc.strerror or exc}")
                continue
            return connection
        raise ConnectError(f"cannot connect to {target.host}:{target.port} ({'; '.join(failures)})")

    def _context(self, target: Target) -> ssl.SSLContext:
        return self._ssl if target.client is None else self._client_contexts.get(target.client)

    async def _resolve(self, target: Target) -> list[str]:
        """Checked addresses of the target's host (cached like aiohttp's DNS cache)."""
        name = (target.host, target.port)
        cached = self._dns.get(name)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answers = await self._resolver.resolve(target.host, target.port, socket.AF_UNSPEC)
        except DeliveryError:
            raise  # BlockedDestination from the guard
        except OSError as exc:
            raise ConnectError(f"cannot resolve {target.host}: {exc.strerror or exc}") from exc
        addresses = [answer["host"] for answer in answers]
        if len(self._dns) > 4096:
            self._dns.clear()
        self._dns[name] = (now + DNS_TTL_S, addresses)
        return addresses

    async def close(self) -> None:
        """Close every pooled connection and the resolver."""
        self._deadlines.close()
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        self._idle_count = 0
        await self._resolver.close()
