"""A scripted loopback HTTP/1.1 server and a throwaway CA for the sender suite.

The server is a raw asyncio one (not aiohttp) so it can send what a real receiver
might: chunked or close-delimited bodies, 1xx interim answers, garbage, silence, or a
hang-up on a keep-alive connection; it counts connections to prove reuse.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from dispatcher.bench.certificates import LOOPBACK, Key, issue, new_key, pem, pem_key

HUGE_BYTES = 10 * 1024 * 1024

# What the server does for a path: write to the stream, return whether to keep it open.
Action = Callable[[asyncio.StreamWriter, int, "ScriptedServer"], Awaitable[bool]]


def _answer(raw: bytes, keep: bool = True) -> Action:
    async def action(writer: asyncio.StreamWriter, served: int, server: ScriptedServer) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return action


async def _huge(writer: asyncio.StreamWriter, served: int, server: ScriptedServer) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE_BYTES)
    chunk = b"x" * 65536
    try:
        for _ in range(HUGE_BYTES // len(chunk)):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass  # the sender hung up after its capped read: that is the point
    return False


async def _silent(writer: asyncio.StreamWriter, served: int, server: ScriptedServer) -> bool:
    await server.stopping.wait()
    return False


async def _drop_second(writer: asyncio.StreamWriter, served: int, server: ScriptedServer) -> bool:
    """Answer the first request of a connection, hang up on the next without a byte."""
    if served >= 2:
        return False
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    return True


ROUTES: dict[str, Action] = {
    "/ok": _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    "/chunked": _answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    ),
    "/close": _answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited", False),
    "/close-length": _answer(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye", False
    ),
    "/continue": _answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade"
    ),
    "/no-content": _answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
    "/redirect": _answer(b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n"),
    "/retry-after": _answer(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    ),
    "/many-headers": _answer(
        b"HTTP/1.1 503 Service Unavailable\r\nX-Request-Id: r-1\r\nSet-Cookie: s=secret\r\n"
        + b"".join(b"X-H-%d: %d\r\n" % (n, n) for n in range(30))
        + b"Content-Length: 0\r\n\r\n"
    ),
    "/garbage": _answer(b"SMTP ready, not HTTP at all\r\n\r\n", False),
    "/hang-up": _answer(b"", False),
    "/huge": _huge,
    "/silent": _silent,
    "/drop-second": _drop_second,
}


@dataclass
class ScriptedServer:
    """What the server saw: connections accepted and request paths, in order."""

    port: int = 0
    connections: int = 0
    paths: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.paths.append(path)
                served += 1
                if not await ROUTES[path](writer, served, self):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def start_server(
    state: ScriptedServer, ssl_context: ssl.SSLContext | None = None
) -> asyncio.Server:
    """Serve ``state``'s routes on a free loopback port (written to ``state.port``)."""
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    return server


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test CA and of server certificates for ``hook.test``/127.0.0.1."""

    ca: Path
    signed: tuple[Path, Path]  # (cert, key) issued by the CA
    self_signed: tuple[Path, Path]
    wrong_name: tuple[Path, Path]  # issued by the CA for another name

    def server_context(self, pair: tuple[Path, Path]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*pair)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the test CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca))


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_text(pem(cert))
    key_path.write_text(pem_key(key))
    return cert_path, key_path


def make_certificates(directory: Path) -> Certificates:
    """A fresh CA and three server certificates, written under ``directory``."""
    ca_key = new_key()
    ca_cert = issue("Hooklane test CA", ca_key, ca=True)
    ca_path, _ = _write(directory, "ca", ca_cert, ca_key)
    names = [x509.DNSName("hook.test"), LOOPBACK]
    key = new_key()
    by_ca = (ca_cert.subject, ca_key)
    signed = issue("hook.test", key, issuer=by_ca, names=names)
    self_signed = issue("hook.test", key, names=names)
    wrong = issue("elsewhere.test", key, issuer=by_ca, names=[x509.DNSName("elsewhere.test")])
    return Certificates(
        ca=ca_path,
        signed=_write(directory, "signed", signed, key),
        self_signed=_write(directory, "self-signed", self_signed, key),
        wrong_name=_write(directory, "wrong-name", wrong, key),
    )
