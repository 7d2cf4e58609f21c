"""The loopback webhook receiver every test delivers to.

``async with Receiver() as rx:`` listens on a free port of 127.0.0.1 and records each
POST as a ``Received`` (path, headers, body, arrival time, arrival number and the status it
was answered with). ``rx.url`` is ``/hook`` on it; ``rx.url_for(name)`` another path, so
several webhooks can share one receiver (``rx.on(name)`` their requests).

- Answers: 200 unless ``respond`` says otherwise. ``respond(received)`` returns a status,
  a whole ``web.StreamResponse`` or an awaitable of either (a slow or hanging receiver);
  ``failing``, ``numbered`` and ``answering`` build the common scripts.
- HTTPS: pass ``ssl_context`` (a server context; require client certificates in it for
  mutual TLS); ``url`` then starts with ``https``.
- Waiting: ``await rx.wait_for(lambda rx: ...)`` wakes on each request, no polling.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

REPLY = "ok"  # the body of every answer a script does not build itself


class Headers(dict[str, str]):
    """Request headers: names lowercased, looked up in any case (``h["Content-Type"]``)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


@dataclass
class Received:
    """One request a ``Receiver`` got."""

    path: str
    headers: Headers
    body: bytes
    received_at: float  # time.time()
    number: int = 0  # 0 for the receiver's first request, 1 for the next, ...
    status: int | None = None  # what it was answered, once answered

    def json(self) -> Any:
        """The decoded body."""
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        """The delivered event's id (the body's ``id``)."""
        return str(self.json()["id"])

    @property
    def ok(self) -> bool:
        """Answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


Answer = int | web.StreamResponse
Respond = Callable[[Received], Answer | Awaitable[Answer]]


def failing(status: int = 500) -> Respond:
    """Answer every request ``status``."""
    return lambda _received: status


def numbered(script: Callable[[int], tuple[int, Mapping[str, str]]]) -> Respond:
    """Answer request number ``n`` (from 0) with ``script(n) -> (status, headers)``."""

    def respond(received: Received) -> web.Response:
        status, headers = script(received.number)
        return web.Response(status=status, headers=dict(headers), text=REPLY)

    return respond


def answering(status: int, body: str) -> Respond:
    """Answer every request ``status`` with ``body``."""
    return lambda _received: web.Response(status=status, text=body)


@dataclass
class Receiver:
    """A loopback webhook receiver that records requests; ``respond`` picks the answer."""

    respond: Respond | None = None
    ssl_context: ssl.SSLContext | None = None
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return self.url_for("hook")

    def url_for(self, name: str) -> str:
        """A distinct path on the same server (several webhooks, one receiver)."""
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}/{name}"

    def on(self, path: str) -> list[Received]:
        """The requests received on ``/path``."""
        return [r for r in self.requests if r.path == "/" + path]

    def event_ids(self, path: str = "hook") -> list[str]:
        """The event ids received on ``/path``, in arrival order (repeats included)."""
        return [r.event_id for r in self.on(path)]

    async def wait_for(self, predicate: Callable[[Receiver], bool], within: float = 30) -> None:
        """Wait until ``predicate(self)`` holds; checked on each arrival and each answer."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: predicate(self))

    async def start(self) -> Receiver:
        """Listen on a free loopback port (``url`` is valid afterwards)."""
        app = web.Application()
        app.router.add_post("/{name:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            path=request.path,
            headers=Headers((k.lower(), v) for k, v in request.headers.items()),
            body=await request.read(),
            received_at=time.time(),
            number=len(self.requests),
        )
        self.requests.append(received)
        await self._notify()
        answer: Any = 200 if self.respond is None else self.respond(received)
        if isinstance(answer, Awaitable):
            answer = await answer
        response = answer if isinstance(answer, web.StreamResponse) else None
        received.status = response.status if response else int(answer)
        await self._notify()
        return response or web.Response(status=int(answer), text=REPLY)
