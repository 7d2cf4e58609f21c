"""Asking a Kafka node which brokers it sees live, with a raw Metadata request.

The readiness probe of ``dispatcher.kafka.apache``: no client library, one frame out and
one back, so it works before any client could bootstrap.
"""

from __future__ import annotations

import socket
import struct


def _metadata_request(correlation_id: int) -> bytes:
    # Metadata v4 (header v1): no topics, no auto-creation. Kafka 4.x still serves v4.
    client = b"hooklane-probe"
    body = struct.pack(">hhih", 3, 4, correlation_id, len(client)) + client
    body += struct.pack(">i?", 0, False)
    return struct.pack(">i", len(body)) + body


def metadata_brokers(host: str, port: int, timeout: float = 1.0) -> set[int]:
    """The ids of the live (unfenced) brokers the node at ``host:port`` reports."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_metadata_request(1))
        size = struct.unpack(">i", read_exactly(sock, 4))[0]
        data = read_exactly(sock, size)
    # correlation id, throttle time, then the brokers array
    correlation_id, _throttle, count = struct.unpack_from(">iii", data, 0)
    if correlation_id != 1:
        raise OSError("metadata response to another request")
    offset, ids = 12, set()
    for _ in range(count):
        node_id, host_length = struct.unpack_from(">ih", data, offset)
        offset += 6 + host_length + 4  # host, port
        (rack_length,) = struct.unpack_from(">h", data, offset)
        offset += 2 + max(rack_length, 0)
        ids.add(node_id)
    return ids


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock`` (a Kafka response frame); OSError if it closes first."""
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise OSError("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
