"""Disruptions of a three-node Apache Kafka cluster (``make chaos``), and what they need.

- ``quorum_leader``: the active KRaft controller's node id, asked with a DescribeQuorum
  request (the pinned release has no kafka-tools jar, and aiokafka has no such call).
- ``partition_state`` / ``isr_complete`` / ``busiest_leader``: leaders and in-sync
  replicas from the cluster metadata.
- ``NodeOps``: starts, stops and kills nodes from one long-lived thread of its own (a
  node dies with the thread that started it, ``dispatcher.parent_death``), so that
  the event loop that receives the deliveries never blocks on a JVM starting.
- The disruptions: kill -9 of the deliveries leader, kill -9 of the active controller,
  a rolling restart, SIGSTOP of one node. Each returns the moments it ended.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient

from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.kafka.metadata_probe import read_exactly
from dispatcher.settings import Settings
from tests.chaos.harness import Stack
from tests.chaos.scenarios import Disruption

T = TypeVar("T")
METADATA_TOPIC = "__cluster_metadata"


# -- the active controller --------------------------------------------------------------


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_uvarint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def describe_quorum_request(correlation_id: int) -> bytes:
    """DescribeQuorum v0 (API 55, flexible: request header v2) for __cluster_metadata-0."""
    client = b"hooklane-chaos"
    header = struct.pack(">hhih", 55, 0, correlation_id, len(client)) + client + b"\x00"
    topic = METADATA_TOPIC.encode()
    body = _uvarint(2) + _uvarint(len(topic) + 1) + topic  # one topic
    body += _uvarint(2) + struct.pack(">i", 0) + b"\x00"  # one partition: 0, no tags
    body += b"\x00" + b"\x00"  # topic tags, request tags
    message = header + body
    return struct.pack(">i", len(message)) + message


def parse_quorum_leader(data: bytes, correlation_id: int) -> int:
    """The leader id in a DescribeQuorum v0 response (after its size prefix)."""
    (got,) = struct.unpack_from(">i", data, 0)
    if got != correlation_id:
        raise OSError("DescribeQuorum response to another request")
    tags, offset = _read_uvarint(data, 4)  # response header v1: its tagged fields
    if tags:
        raise OSError("DescribeQuorum response header with tagged fields")
    (error,) = struct.unpack_from(">h", data, offset)
    if error:
        raise OSError(f"DescribeQuorum error {error}")
    _topics, offset = _read_uvarint(data, offset + 2)
    name_length, offset = _read_uvarint(data, offset)
    offset += name_length - 1
    _partitions, offset = _read_uvarint(data, offset)
    _index, partition_error, leader = struct.unpack_from(">ihi", data, offset)
    if partition_error:
        raise OSError(f"DescribeQuorum partition error {partition_error}")
    return int(leader)


def quorum_leader(host: str, port: int, timeout: float = 2.0) -> int:
    """The node id of the active KRaft controller, asked of the node at ``host:port``."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(describe_quorum_request(7))
        (size,) = struct.unpack(">i", read_exactly(sock, 4))
        return parse_quorum_leader(read_exactly(sock, size), 7)


# -- leaders and in-sync replicas -------------------------------------------------------


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def partition_states(topics: Iterable[Mapping[str, Any]]) -> list[PartitionState]:
    """The partitions in aiokafka's ``describe_topics()`` answer."""
    return [
        PartitionState(
            topic["topic"],
            part["partition"],
            part["leader"],
            tuple(part["replicas"]),
            tuple(part["isr"]),
        )
        for topic in topics
        for part in topic["partitions"]
    ]


def isr_complete(states: Iterable[PartitionState]) -> bool:
    """Every partition has a leader and all its replicas in sync."""
    states = list(states)
    return bool(states) and all(
        state.leader >= 0 and set(state.isr) == set(state.replicas) for state in states
    )


def busiest_leader(states: Iterable[PartitionState], topic: str) -> int:
    """The node id leading most partitions of ``topic`` (the lowest id on a tie)."""
    counts = Counter(state.leader for state in states if state.topic == topic and state.leader >= 0)
    if not counts:
        raise LookupError(f"no partition of {topic} has a leader")
    return min(counts, key=lambda node: (-counts[node], node))


async def partition_state(bootstrap: str) -> list[PartitionState]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        return partition_states(await admin.describe_topics())
    finally:
        await admin.close()


async def wait_isr_complete(bootstrap: str, within_s: float = 180.0) -> float:
    """Wait until every partition's replicas are all in sync again; the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            if isr_complete(await partition_state(bootstrap)):
                return time.monotonic() - started
        except Exception:  # a node is still coming back: ask again
            pass
        if time.monotonic() - started > within_s:
            raise TimeoutError(f"in-sync replicas did not recover in {within_s:.0f}s")
        await asyncio.sleep(0.5)


# -- acting on nodes --------------------------------------------------------------------


class NodeOps:
    """A cluster's node operations, run on one thread that lives until ``close()``."""

    def __init__(self, broker: ApacheKafkaBroker) -> None:
        self.broker = broker
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-nodes")
        self.log: list[str] = []  # what was done, with the seconds it took

    async def run(self, what: str, action: Callable[[], T]) -> T:
        started = time.monotonic()
        result = await asyncio.get_running_loop().run_in_executor(self._thread, action)
        self.log.append(f"{what}: {time.monotonic() - started:.1f}s")
        return result

    async def kill(self, index: int) -> None:
        await self.run(f"kill -9 node {index + 1}", lambda: self.broker.kill_node(index))

    async def stop(self, index: int) -> None:
        await self.run(f"SIGTERM node {index + 1}", lambda: self.broker.stop_node(index))

    async def start(self, index: int) -> None:
        await self.run(f"start node {index + 1}", lambda: self.broker.start_node(index, 180))

    async def controller(self) -> int:
        """The active controller's index (node id - 1), asked of a running node."""
        for index, pid in enumerate(self.broker.pids):
            if pid is not None:
                port = self.broker.node_port(index)
                leader = await self.run(
                    "describe quorum", functools.partial(quorum_leader, self.broker.host, port)
                )
                return leader - 1
        raise LookupError("no node runs")

    def close(self) -> None:
        """Let the thread go (the nodes it started die with it: stop the broker after)."""
        self._thread.shutdown(wait=True)


async def _wait_recovered(ops: NodeOps) -> None:
    seconds = await wait_isr_complete(ops.broker.bootstrap_servers)
    ops.log.append(f"ISR complete after {seconds:.1f}s")


def kill_deliveries_leader(ops: NodeOps, settings: Settings, down_s: float = 20.0) -> Disruption:
    """kill -9 the node leading most deliveries partitions; start it again after ``down_s``."""

    async def disrupt(stack: Stack) -> list[float]:
        await asyncio.sleep(3.0)
        states = await partition_state(ops.broker.bootstrap_servers)
        index = busiest_leader(states, settings.deliveries_topic) - 1
        await ops.kill(index)
        await asyncio.sleep(down_s)
        await ops.start(index)
        ended = time.time()
        await _wait_recovered(ops)
        return [ended]

    return disrupt


def kill_controller(ops: NodeOps, down_s: float = 10.0) -> Disruption:
    """kill -9 the active KRaft controller; start it again after ``down_s``."""

    async def disrupt(stack: Stack) -> list[float]:
        await asyncio.sleep(3.0)
        index = await ops.controller()
        await ops.kill(index)
        await asyncio.sleep(down_s)
        await ops.start(index)
        ended = time.time()
        await _wait_recovered(ops)
        ops.log.append(f"controller was node {index + 1}, now {await ops.controller() + 1}")
        return [ended]

    return disrupt


def rolling_restart(ops: NodeOps) -> Disruption:
    """SIGTERM each node in turn, start it again, wait until every ISR is full, next."""

    async def disrupt(stack: Stack) -> list[float]:
        ends = []
        await asyncio.sleep(3.0)
        for index in range(ops.broker.nodes):
            await ops.stop(index)
            await ops.start(index)
            ends.append(time.time())
            await _wait_recovered(ops)
        return ends

    return disrupt


def freeze_deliveries_leader(
    ops: NodeOps, settings: Settings, frozen_s: float = 15.0
) -> Disruption:
    """SIGSTOP the node leading most deliveries partitions for ``frozen_s``, then SIGCONT."""

    async def disrupt(stack: Stack) -> list[float]:
        await asyncio.sleep(3.0)
        states = await partition_state(ops.broker.bootstrap_servers)
        index = busiest_leader(states, settings.deliveries_topic) - 1
        await ops.run(f"SIGSTOP node {index + 1}", lambda: ops.broker.freeze(index))
        try:
            await asyncio.sleep(frozen_s)
        finally:
            ops.broker.thaw(index)
        ended = time.time()
        await _wait_recovered(ops)
        return [ended]

    return disrupt
