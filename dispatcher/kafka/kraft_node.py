"""A KRaft node's identity and configuration: listeners, ports, server.properties.

``ApacheKafkaBroker`` (``dispatcher.kafka.apache``) holds one ``KraftNode`` per JVM;
``server_properties`` is the configuration it writes for each.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.kafka.broker import free_port


@dataclass(frozen=True, slots=True)
class Listener:
    """An extra client listener on every node, e.g. ``Listener("SASL_SSL", "SASL_SSL")``.

    Each gets a free loopback port per node; its ``listener.name.<name>.*`` settings
    (keystores, JAAS, mechanisms) go in ``properties``.
    """

    name: str
    protocol: str = "PLAINTEXT"


@dataclass(slots=True)
class KraftNode:
    """One JVM of the cluster: its listener ports, directory and process while it runs."""

    index: int
    ports: dict[str, int]
    directory: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    stdout: Path | None = None

    @property
    def node_id(self) -> int:
        return self.index + 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes them (base64url of 16 bytes, no padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # a leading dash reads as an option
            return text


def _escape(text: str, key: bool = False) -> str:
    """``text`` as a java.util.Properties key or value."""
    out = []
    for i, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif (key and char in "=: #!") or (i == 0 and char in " #!"):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def render_properties(properties: Mapping[str, str]) -> str:
    """A server.properties text."""
    return "".join(f"{_escape(k, key=True)}={_escape(v)}\n" for k, v in properties.items())


def distinct_port(host: str, taken: set[int]) -> int:
    """A free port not in ``taken`` (then added): free_port() may hand back a port it
    gave a moment ago, and two listeners on one port stop the broker from starting."""
    while (chosen := free_port(host)) in taken:
        pass
    taken.add(chosen)
    return chosen


def server_properties(
    nodes: Sequence[KraftNode],
    index: int,
    host: str,
    listeners: Sequence[Listener],
    partitions: int,
) -> dict[str, str]:
    """The generated server.properties of node ``index`` of ``nodes`` (its directory must exist).

    Replication follows the cluster's size (at most 3), with ``min.insync.replicas`` 2
    from three nodes.
    """
    node = nodes[index]
    assert node.directory is not None
    replication = min(3, len(nodes))
    min_isr = 2 if replication >= 3 else 1
    protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT"}
    protocols.update((lst.name.upper(), lst.protocol.upper()) for lst in listeners)
    client = [name for name in node.ports if name != "CONTROLLER"]
    voters = ",".join(f"{other.node_id}@{host}:{other.ports['CONTROLLER']}" for other in nodes)
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listeners": ",".join(f"{name}://{host}:{port}" for name, port in node.ports.items()),
        "advertised.listeners": ",".join(f"{name}://{host}:{node.ports[name]}" for name in client),
        "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
        "log.dirs": str(node.directory / "data"),
        # as in production: topics are created explicitly, with their partitions
        "auto.create.topics.enable": "false",
        "num.partitions": str(partitions),
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replication),
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        # fewer internal partitions than the 50 of production: each costs start-up
        # of the coordinator and files; groups still spread over several
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.num.partitions": "5",
        "group.initial.rebalance.delay.ms": "0",
        # a crashed node is fenced (leaders move, it leaves the ISRs) in 3 s, not 9
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # small-machine sizing: threads and the log cleaner's 128 MB dedupe buffer
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
    }
