"""The lean sender's way out through ``HOOKLANE_EGRESS_PROXY``: an HTTP CONNECT tunnel.

The sender opens a TCP connection to the proxy, asks ``CONNECT host:port`` (for http
and https targets alike: one path, and the proxy sees only the destination), and on
``200`` runs TLS (for https) and HTTP over the tunnel as over a direct socket. The
proxy resolves the target's name and decides whether it may be reached: with a proxy
set, the sender never resolves or connects to a target itself.
"""

from __future__ import annotations

import asyncio
import socket

from dispatcher.delivery.failures import ConnectError

MAX_PROXY_HEAD = 8192


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_tunnel(proxy: tuple[str, int], host: str, port: int) -> socket.socket:
    """A non-blocking socket whose bytes reach ``host:port`` through the proxy.

    ConnectError when the proxy cannot be reached or refuses (its status line is kept).
    The caller's deadline bounds it.
    """
    loop = asyncio.get_running_loop()
    proxy_host, proxy_port = proxy
    where = f"the egress proxy {_authority(proxy_host, proxy_port)}"
    try:
        infos = await loop.getaddrinfo(proxy_host, proxy_port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(f"cannot resolve {where}: {exc.strerror or exc}") from exc
    sock = None
    failures = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            break
        except OSError as exc:
            sock.close()
            sock = None
            failures.append(exc.strerror or str(exc))
    if sock is None:
        raise ConnectError(f"cannot connect to {where} ({'; '.join(failures)})")
    try:
        authority = _authority(host, port)
        request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        await loop.sock_sendall(sock, request.encode("ascii"))  # hosts are IDNA-encoded
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, MAX_PROXY_HEAD)
            if not chunk:
                raise ConnectError(f"{where} closed the connection during CONNECT {authority}")
            head += chunk
            if len(head) > MAX_PROXY_HEAD:
                raise ConnectError(f"{where} answered CONNECT with an oversized head")
        status_line = head.partition(b"\r\n")[0]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or parts[1] != b"200":
            shown = status_line[:200].decode("latin-1")
            raise ConnectError(f"{where} refused CONNECT {authority}: {shown}")
        if head.index(b"\r\n\r\n") + 4 != len(head):  # the target spoke first: not HTTP
            raise ConnectError(f"{where} sent bytes after its CONNECT answer")
    except BaseException:
        sock.close()
        raise
    return sock
