"""The benchmark receiver: a minimal, fast HTTP/1.1 server on raw ``asyncio.Protocol``.

Run it as its own process so its CPU never mixes with the dispatcher's::

    python -m dispatcher.bench.receiver --port 0 --mode ok

It prints ``listening <port>`` once bound. The first path segment picks the answer:
``/ok/...`` → 200, ``/fail503/...`` → 503, ``/hang/...`` → no answer until the client
gives up; any other path gets ``--mode``. For every ``ok`` request it records the
arrival time (``time.time()``), counts duplicates by (path, ``webhook-id``), and reads
``"sent_at"`` and ``"seq"`` from the body's ``data`` to compute publish→receive
latency and check per-path order without a full JSON parse.

Control endpoints (same port): ``GET /_stats`` (JSON counters), ``GET /_arrivals``
and ``GET /_latencies`` (raw little-endian float64 arrays of the unique ``ok``
deliveries, seconds), ``POST /_reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from array import array
from collections.abc import Sequence

import orjson

MODES = ("ok", "fail503", "hang")
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_MAX_HEAD = 64 * 1024


def number_after(body: bytes, key: bytes) -> float | None:
    """The JSON number following ``"key":`` in ``body``; None if absent or malformed.

    Bodies are compact JSON (orjson), so a byte search is enough and far cheaper
    than decoding a 1 KB document per request.
    """
    start = body.find(b'"' + key + b'":')
    if start < 0:
        return None
    start += len(key) + 3
    end = start
    while end < len(body) and body[end] in b"0123456789.-+eE":
        end += 1
    try:
        return float(body[start:end])
    except ValueError:
        return None


def header_value(head: bytes, lowered: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower-case) in a request head, or None."""
    start = lowered.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


class Recorder:
    """Counters and samples of everything the receiver saw."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (between phases)."""
        self.requests = 0
        self.by_mode = dict.fromkeys(MODES, 0)
        self.duplicates = 0
        self.order_violations = 0
        self.arrivals = array("d")
        self.latencies = array("d")
        self._seen: set[int] = set()
        self._highest_seq: dict[bytes, float] = {}

    def record_ok(self, path: bytes, webhook_id: bytes | None, body: bytes, now: float) -> None:
        """Account for one successful delivery."""
        key = hash((path, webhook_id)) if webhook_id else None
        if key is not None:
            if key in self._seen:
                self.duplicates += 1
                return
            self._seen.add(key)
        self.arrivals.append(now)
        sent_at = number_after(body, b"sent_at")
        if sent_at is not None:
            self.latencies.append(now - sent_at)
        seq = number_after(body, b"seq")
        if seq is not None:
            highest = self._highest_seq.get(path)
            if highest is not None and seq < highest:
                self.order_violations += 1
            else:
                self._highest_seq[path] = seq

    def stats(self) -> dict[str, object]:
        """The counters as JSON-ready values."""
        return {
            "requests": self.requests,
            "by_mode": self.by_mode,
            "unique_ok": len(self.arrivals),
            "duplicates": self.duplicates,
            "order_violations": self.order_violations,
            "first_at": self.arrivals[0] if self.arrivals else None,
            "last_at": self.arrivals[-1] if self.arrivals else None,
            "paths": len(self._highest_seq),
        }


class ReceiverProtocol(asyncio.Protocol):
    """One client connection: keep-alive HTTP/1.1 with Content-Length bodies."""

    def __init__(self, recorder: Recorder, default_mode: str) -> None:
        self.recorder = recorder
        self.default_mode = default_mode
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.hung = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.hung:
            return  # a hung connection never answers; the client times out
        self.buffer += data
        while self.transport is not None and not self.hung:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._reject()
                return
            head = bytes(self.buffer[:end])
            lowered = head.lower()
            length_raw = header_value(head, lowered, b"content-length")
            if b"transfer-encoding:" in lowered:
                self._reject()  # the dispatcher sends bytes, so always a Content-Length
                return
            try:
                length = int(length_raw) if length_raw else 0
            except ValueError:
                self._reject()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self.handle(head, lowered, body)

    def handle(self, head: bytes, lowered: bytes, body: bytes) -> None:
        """Answer one complete request."""
        now = time.time()
        assert self.transport is not None
        parts = head.split(b" ", 2)
        if len(parts) < 3:
            self._reject()
            return
        method, path = parts[0], parts[1]
        if path.startswith(b"/_"):
            self.transport.write(self.control(method, path))
            return
        recorder = self.recorder
        recorder.requests += 1
        segment = path.split(b"/", 2)[1].decode("latin-1") if path.count(b"/") >= 1 else ""
        mode = segment if segment in MODES else self.default_mode
        recorder.by_mode[mode] += 1
        if mode == "ok":
            webhook_id = header_value(head, lowered, b"webhook-id")
            recorder.record_ok(path, webhook_id, body, now)
            self.transport.write(_OK)
        elif mode == "fail503":
            self.transport.write(_UNAVAILABLE)
        else:
            self.hung = True

    def control(self, method: bytes, path: bytes) -> bytes:
        """The response to a control request."""
        recorder = self.recorder
        if path == b"/_stats":
            return _response(orjson.dumps(recorder.stats()), b"application/json")
        if path == b"/_arrivals":
            return _response(recorder.arrivals.tobytes(), b"application/octet-stream")
        if path == b"/_latencies":
            return _response(recorder.latencies.tobytes(), b"application/octet-stream")
        if path == b"/_reset" and method == b"POST":
            recorder.reset()
            return _response(b"{}", b"application/json")
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    def _reject(self) -> None:
        if self.transport is not None:
            self.transport.write(_BAD)
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _response(body: bytes, content_type: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        content_type,
        len(body),
        body,
    )


async def serve(host: str, port: int, mode: str) -> None:
    """Serve until cancelled; prints ``listening <port>`` once bound."""
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    server = await loop.create_server(
        lambda: ReceiverProtocol(recorder, mode), host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dispatcher.bench.receiver``."""
    parser = argparse.ArgumentParser(prog="python -m dispatcher.bench.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mode", choices=MODES, default="ok", help="answer for other paths")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
