"""Apache Kafka (KRaft) as a pinned tool: its jars, and a launcher for tests and chaos runs.

The sibling of ``dispatcher.kafka.broker.EmbeddedBroker`` (tansu) for what tansu lacks: the
idempotent producer, transactions and ``read_committed``, topic configs, replication
across brokers. ``deploy/kafka/pom.xml`` pins the release (``kafka.version``);
``ensure_kafka()`` resolves it with Maven into the git-ignored ``.kafka/<version>/lib`` of
the repository root, once: a marker file (``resolved.json``: the pom's digest and the
jar names) makes later calls a few file checks, and a file lock (``fcntl.flock``) makes
pytest-xdist workers that call it at once run Maven once and wait for it.

``ApacheKafkaBroker`` starts ``nodes`` combined broker+controller JVMs (``kafka.Kafka``)
on free loopback ports, on storage that ``kafka.tools.StorageTool format`` prepared in
a temporary directory with a random cluster id; the directory goes when it stops (not
when its parent is SIGKILLed: then it stays behind, under 1 MB on disk). One node: replication 1
everywhere. Three nodes: a static quorum of all three, replication 3 and
``min.insync.replicas`` 2, and ``stop_node``/``kill_node``/``start_node`` for chaos. As in
production, topics are not auto-created. A node dies with the thread that started it
(``dispatcher.parent_death``), as tansu does.

Start-up, measured on 2 cores (Java 17, Kafka 4.4.0, ``START_JVM_OPTIONS``): a node costs
about 1.9 CPU seconds until it answers metadata with the class-data-sharing archive
(``class_archive``), 2.9 without; on a nearly idle machine (load 1.3) a single node was
ready 2-2.5 s after ``start()`` (format included; 3.5-4 s without the archive), with an
RSS of about 165 MiB (205 without). On a machine shared with other test runs (load
8-15) the medians were 5.6 s for one node and 15 s for three (12.7 s and 25 s without).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import structlog

from dispatcher.kafka.broker import BrokerError, StartedWhileEntered, free_port
from dispatcher.parent_death import die_with_parent

log = structlog.get_logger(__name__)

POM_RELATIVE = Path("deploy", "kafka", "pom.xml")
CACHE_DIRNAME = ".kafka"
MARKER = "resolved.json"
MIN_JAVA = 17  # Kafka 4.x brokers and tools need Java 17 (clients: 11)
JAVA_PACKAGE = "openjdk-17-jre-headless"

# Fast start on small machines, at the cost of peak throughput: C1 only (no C2 warm-up
# competing with start-up on 2 cores), the serial collector (no GC threads), a small heap.
# Measured: a node answers metadata in 2.5-2.8 s of wall time after launch, against
# 4.3-5.1 s with only the serial collector, on an otherwise idle 2-core machine.
START_JVM_OPTIONS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
BROKER_HEAP: tuple[str, ...] = ("-Xms256m", "-Xmx512m")
TOOL_HEAP: tuple[str, ...] = ("-Xmx256m",)

# A single log4j2 file appender per node; the level is the ``log_level`` argument.
_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${{sys:kafka.logs.dir}}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
"""


class KafkaToolMissing(BrokerError):
    """``java`` (>= 17) or, to resolve the jars, ``mvn`` is not installed; says what to do."""


# -- the pinned release ----------------------------------------------------------------


def kafka_pom() -> Path:
    """``deploy/kafka/pom.xml`` of the checkout this module runs from."""
    for parent in Path(__file__).resolve().parents:
        if (parent / POM_RELATIVE).is_file():
            return parent / POM_RELATIVE
    raise BrokerError(f"{POM_RELATIVE} not found above {Path(__file__).resolve().parent}")


def kafka_version(pom: Path | None = None) -> str:
    """The Apache Kafka release the pom pins (its ``kafka.version`` property)."""
    pom = pom or kafka_pom()
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(pom).getroot().findtext("m:properties/m:kafka.version", namespaces=namespace)
    if not version:
        raise BrokerError(f"{pom} sets no <kafka.version> property")
    return version.strip()


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``"1.8.0_402"`` is 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def require_java(environ: Mapping[str, str] | None = None) -> str:
    """The ``java`` that runs Kafka: ``$JAVA_HOME/bin/java`` or the first on PATH, >= 17."""
    return _java(environ)[0]


def _java(environ: Mapping[str, str] | None) -> tuple[str, str]:
    env = os.environ if environ is None else environ
    return _require_java(env.get("JAVA_HOME", ""), env.get("PATH", os.defpath))


@cache
def _require_java(java_home: str, path: str) -> tuple[str, str]:
    """The java and its ``-version`` output."""
    home_java = Path(java_home, "bin", "java") if java_home else None
    if home_java is not None and os.access(home_java, os.X_OK):
        java: str | None = str(home_java)
    else:
        java = shutil.which("java", path=path)
    if java is None:
        raise KafkaToolMissing(
            f"java is not installed: Apache Kafka needs Java {MIN_JAVA}+"
            f" (Debian: apt-get install {JAVA_PACKAGE}; or set JAVA_HOME)"
        )
    try:
        output = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaToolMissing(f"{java} -version failed: {exc}") from exc
    major = java_major(output)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major else "an unknown Java"
        raise KafkaToolMissing(
            f"{java} is {found}: Apache Kafka needs Java {MIN_JAVA}+"
            f" (Debian: apt-get install {JAVA_PACKAGE}; or set JAVA_HOME)"
        )
    return java, output


def require_mvn(environ: Mapping[str, str] | None = None) -> str:
    """The ``mvn`` on PATH, which resolves the pinned jars."""
    env = os.environ if environ is None else environ
    mvn = shutil.which("mvn", path=env.get("PATH", os.defpath))
    if mvn is None:
        raise KafkaToolMissing(
            "mvn is not installed: Maven resolves Apache Kafka's jars from"
            f" {POM_RELATIVE} (Debian: apt-get install maven)"
        )
    return mvn


# -- resolution ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaRuntime:
    """A resolved release: the java to run it with and its jars."""

    version: str
    java: str
    jars: tuple[Path, ...]
    home: Path  # .kafka/<version>
    java_version: str  # java -version's output

    @property
    def classpath(self) -> str:
        return os.pathsep.join(str(jar) for jar in self.jars)

    @property
    def class_archive(self) -> Path:
        """Where this java's class-data-sharing archive of these jars goes (``class_archive``)."""
        identity = "\0".join([os.path.realpath(self.java), self.java_version, self.classpath])
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return self.home / "cds" / f"kafka-{key}.jsa"


def _digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _resolved(home: Path, version: str, digest: str) -> tuple[Path, ...] | None:
    """The jars of a complete resolution of this pom in ``home``, else None."""
    try:
        marker = json.loads((home / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or (marker.get("version"), marker.get("pom")) != (
        version,
        digest,
    ):
        return None
    jars = tuple(home / "lib" / str(name) for name in marker.get("jars", ()))
    if not jars or not all(jar.is_file() for jar in jars):
        return None
    return jars


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _maven_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("[ERROR]")]
    return (errors or lines or ["no output"])[0][:400]


def _resolve(home: Path, pom: Path, version: str, digest: str, timeout: float) -> None:
    mvn = require_mvn()
    staging = home / f"lib.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"mvn did not resolve Apache Kafka {version} within {timeout:.0f}s"
        ) from exc
    jars = sorted(path.name for path in staging.glob("*.jar")) if staging.is_dir() else []
    if result.returncode != 0 or not jars:
        shutil.rmtree(staging, ignore_errors=True)
        detail = _maven_error(result.stdout + result.stderr)
        raise BrokerError(
            f"mvn could not resolve Apache Kafka {version} from {pom}"
            f" (exit {result.returncode}): {detail}"
        )
    shutil.rmtree(home / "lib", ignore_errors=True)
    shutil.rmtree(home / "cds", ignore_errors=True)  # archives of the old jars
    staging.rename(home / "lib")
    marker = home / f"{MARKER}.{os.getpid()}.tmp"
    marker.write_text(json.dumps({"version": version, "pom": digest, "jars": jars}, indent=1))
    marker.replace(home / MARKER)
    log.info(
        "kafka.resolved",
        version=version,
        jars=len(jars),
        path=str(home / "lib"),
        seconds=round(time.monotonic() - started, 2),
    )


def ensure_kafka(
    pom: Path | None = None, cache_root: Path | None = None, timeout: float = 900.0
) -> KafkaRuntime:
    """The pinned release, resolved with mvn into ``<repo>/.kafka/<version>/lib`` if needed.

    Raises KafkaToolMissing (a one-line message) without java >= 17, or without mvn
    when the jars are not there yet; BrokerError when Maven cannot resolve them.
    """
    pom = pom or kafka_pom()
    java, java_version = _java(None)
    version = kafka_version(pom)
    digest = _digest(pom)
    home = (cache_root or pom.parents[2] / CACHE_DIRNAME) / version
    jars = _resolved(home, version, digest)
    if jars is None:
        home.mkdir(parents=True, exist_ok=True)
        with _locked(home.parent / f"{version}.lock"):
            jars = _resolved(home, version, digest)  # another process may have done it
            if jars is None:
                _resolve(home, pom, version, digest, timeout)
                jars = _resolved(home, version, digest)
                if jars is None:  # pragma: no cover - _resolve wrote it
                    raise BrokerError(f"resolving Apache Kafka {version} left no {MARKER}")
    return KafkaRuntime(version, java, jars, home, java_version)


def kafka_jars() -> list[Path]:
    """The classpath of the pinned release (resolved first if needed)."""
    return list(ensure_kafka().jars)


def class_archive(runtime: KafkaRuntime, timeout: float = 120.0) -> Path | None:
    """This java's class-data-sharing archive of a Kafka node, made once; None if not there.

    Java 17 writes the classes a JVM loaded to a dynamic archive as it exits
    (``-XX:ArchiveClassesAtExit``); a JVM started with ``-XX:SharedArchiveFile`` maps them
    instead of loading, verifying and linking them from the jars again. A training run (one
    node started and cleanly stopped, about 5 s) writes it on first use; a process that
    finds another one training goes on without it, and a failed training is not retried
    for this java and these jars (``<archive>.failed`` says why; delete it to retry). The
    JVM checks the archive against its own build and the classpath and ignores one that
    does not match.
    """
    archive = runtime.class_archive
    failed = archive.with_suffix(".failed")
    if archive.is_file():
        return archive
    if failed.is_file():
        return None
    archive.parent.mkdir(parents=True, exist_ok=True)
    with archive.with_suffix(".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if archive.is_file():
            return archive
        if failed.is_file():
            return None
        staging = archive.with_name(f"{archive.stem}.{os.getpid()}.tmp")
        staging.unlink(missing_ok=True)
        trainer = ApacheKafkaBroker(
            class_data_sharing=False,
            jvm_options=(*START_JVM_OPTIONS, *BROKER_HEAP, f"-XX:ArchiveClassesAtExit={staging}"),
        )
        started = time.monotonic()
        try:
            trainer.start(timeout)  # stops the node if it fails
        except BrokerError as exc:
            error: str | None = str(exc)
        else:
            # a clean exit writes the archive; a node killed at the timeout may leave half
            exited = trainer._stop(timeout)
            written = staging.is_file() and staging.stat().st_size > 0
            error = None if exited and written else "the training node wrote no archive"
        if error is not None:
            staging.unlink(missing_ok=True)
            failed.write_text(error + "\n")
            log.warning("kafka.class_archive.failed", error=error, marker=str(failed))
            return None
        staging.replace(archive)
        log.info(
            "kafka.class_archive",
            path=str(archive),
            megabytes=archive.stat().st_size // 2**20,
            seconds=round(time.monotonic() - started, 2),
        )
        return archive


# -- the broker ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    """An extra client listener on every node, e.g. ``Listener("SASL_SSL", "SASL_SSL")``.

    Each gets a free loopback port per node; its ``listener.name.<name>.*`` settings
    (keystores, JAAS, mechanisms) go in ``properties``.
    """

    name: str
    protocol: str = "PLAINTEXT"


@dataclass(slots=True)
class _Node:
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


def _cluster_id() -> str:
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


# A Java throwable's first line, as printed by an uncaught exception or log4j's layout.
_THROWABLE = re.compile(
    r'^(?:Exception in thread "[^"]*" |Caused by: )?(?:[\w$]+\.)*([\w$]+(?:Exception|Error))'
    r"(?::\s*(.*))?$"
)


def _cause(lines: Sequence[str]) -> str:
    """One line saying why a JVM failed: its first exception, else its last error line."""
    for line in lines:
        match = _THROWABLE.match(line.strip())
        if match:
            name, message = match.groups()
            return f"{name}: {message}"[:500] if message else name
    errors = [line for line in lines if " ERROR " in line or " FATAL " in line]
    chosen = (errors or [line for line in lines if line.strip()] or ["no output"])[-1]
    return chosen.strip()[:500]


def _process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat ("T": stopped by a signal), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _wait_state(pid: int, stopped: bool, timeout: float = 2.0) -> None:
    """Wait (a little) until every thread of ``pid`` is stopped; no-op without /proc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _process_state(pid)
        if state is None or (state in ("T", "t")) == stopped:
            return
        time.sleep(0.005)


def _rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _distinct_port(host: str, taken: set[int]) -> int:
    """A free port not in ``taken`` (then added): free_port() may hand back a port it
    gave a moment ago, and two listeners on one port stop the broker from starting."""
    while (chosen := free_port(host)) in taken:
        pass
    taken.add(chosen)
    return chosen


class ApacheKafkaBroker(StartedWhileEntered):
    """Apache Kafka in KRaft combined mode, ``nodes`` JVMs; a context manager or start()/stop().

    ``properties`` (every node) and ``node_properties(index)`` (one node) override the
    generated server.properties, ``listeners`` adds client listeners beside PLAINTEXT
    (which stays the inter-broker listener and the readiness probe's), ``format_args``
    extends ``kafka-storage format`` (e.g. ``["--add-scram", "SCRAM-SHA-256=[...]"]``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        nodes: int = 1,
        properties: Mapping[str, str] | None = None,
        node_properties: Callable[[int], Mapping[str, str]] | None = None,
        listeners: Sequence[Listener] = (),
        format_args: Sequence[str] = (),
        jvm_options: Sequence[str] = START_JVM_OPTIONS + BROKER_HEAP,
        log_level: str = "WARN",
        partitions: int = 1,
        class_data_sharing: bool = True,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        if port is not None and nodes != 1:
            raise ValueError("port is for a single node; a cluster takes free ports")
        names = ["PLAINTEXT", "CONTROLLER", *(listener.name.upper() for listener in listeners)]
        if len(set(names)) != len(names):
            raise ValueError(f"listener names must differ from each other and {names[:2]}")
        self.host = host
        self.listeners = tuple(listeners)
        self.properties = dict(properties or {})
        self.node_properties = node_properties
        self.format_args = tuple(format_args)
        self.jvm_options = tuple(jvm_options)
        self.log_level = log_level
        self.partitions = partitions
        self.class_data_sharing = class_data_sharing
        self._shared_archive: tuple[str, ...] = ()
        self.cluster_id = _cluster_id()
        # seconds: formatting the storage, start() as a whole, each node's last start_node()
        self.format_seconds: float | None = None
        self.start_seconds: float | None = None
        self.restart_seconds: dict[int, float] = {}
        taken: set[int] = {port} if port else set()
        self._nodes = [
            _Node(
                i,
                {
                    name: (port if port and name == "PLAINTEXT" else _distinct_port(host, taken))
                    for name in names
                },
            )
            for i in range(nodes)
        ]
        self._directory: Path | None = None
        self._runtime: KafkaRuntime | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def nodes(self) -> int:
        return len(self._nodes)

    @property
    def port(self) -> int:
        """The PLAINTEXT port of node 0."""
        return self._nodes[0].ports["PLAINTEXT"]

    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        """``host:port,...`` of every node's ``listener``."""
        return ",".join(f"{self.host}:{node.ports[listener.upper()]}" for node in self._nodes)

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port[,...]`` string that Kafka clients connect to (PLAINTEXT)."""
        return self.bootstrap()

    def node_port(self, index: int, listener: str = "PLAINTEXT") -> int:
        """The port of node ``index``'s ``listener`` (``CONTROLLER`` included)."""
        return self._nodes[index].ports[listener.upper()]

    @property
    def pid(self) -> int | None:
        """The process id of node 0 while it runs."""
        return self.pids[0]

    @property
    def pids(self) -> list[int | None]:
        """Each node's process id while it runs."""
        return [node.process.pid if node.running and node.process else None for node in self._nodes]

    @property
    def directory(self) -> Path | None:
        """The temporary directory of the nodes' storage, configs and logs while started."""
        return self._directory

    def rss(self, index: int = 0) -> int | None:
        """A node's resident set size in bytes (Linux), None when it does not run."""
        process = self._nodes[index].process
        return _rss_bytes(process.pid) if process and process.poll() is None else None

    def log_path(self, index: int = 0) -> Path | None:
        """A node's log4j file (WARN and above unless ``log_level`` says otherwise)."""
        directory = self._nodes[index].directory
        return directory / "logs" / "server.log" if directory else None

    # -- configuration -----------------------------------------------------------------

    def server_properties(self, index: int) -> dict[str, str]:
        """The server.properties of node ``index`` (its directory must exist)."""
        node = self._nodes[index]
        assert node.directory is not None
        replication = min(3, self.nodes)
        min_isr = 2 if replication >= 3 else 1
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT"}
        protocols.update((lst.name.upper(), lst.protocol.upper()) for lst in self.listeners)
        client = [name for name in node.ports if name != "CONTROLLER"]
        voters = ",".join(
            f"{other.node_id}@{self.host}:{other.ports['CONTROLLER']}" for other in self._nodes
        )
        generated = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(
                f"{name}://{self.host}:{port}" for name, port in node.ports.items()
            ),
            "advertised.listeners": ",".join(
                f"{name}://{self.host}:{node.ports[name]}" for name in client
            ),
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "log.dirs": str(node.directory / "data"),
            # as in production: topics are created explicitly, with their partitions
            "auto.create.topics.enable": "false",
            "num.partitions": str(self.partitions),
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
        generated.update(self.properties)
        if self.node_properties is not None:
            generated.update(self.node_properties(index))
        return generated

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Format storage, start every node and wait until each reports all as live.

        The first call on a machine resolves the jars first (``ensure_kafka``), which
        ``timeout`` does not cover. Call it from a thread that outlives the broker: on
        Linux the nodes are killed when the calling thread ends (``dispatcher.parent_death``).
        """
        if self._directory is not None:
            raise BrokerError("this ApacheKafkaBroker is already started")
        self._runtime = ensure_kafka()
        if self.class_data_sharing:
            archive = class_archive(self._runtime)
            self._shared_archive = (f"-XX:SharedArchiveFile={archive}",) if archive else ()
        started = time.monotonic()
        self._directory = Path(tempfile.mkdtemp(prefix="hooklane-kafka-"))
        try:
            self._format_all(timeout)
            self.format_seconds = time.monotonic() - started
            for node in self._nodes:
                self._launch(node)
            self._wait_ready(self._nodes, started + timeout)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        self.start_seconds = time.monotonic() - started
        log.info(
            "kafka.started",
            version=self._runtime.version,
            nodes=self.nodes,
            bootstrap_servers=self.bootstrap_servers,
            seconds=round(self.start_seconds, 2),
        )

    def _java(self, main: str, *args: str, options: Sequence[str], logs: Path) -> list[str]:
        assert self._runtime is not None and self._directory is not None
        return [
            self._runtime.java,
            *options,
            *self._shared_archive,
            f"-Dlog4j2.configurationFile={self._directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={logs}",
            "-cp",
            self._runtime.classpath,
            main,
            *args,
        ]

    def _format_all(self, timeout: float) -> None:
        assert self._directory is not None
        (self._directory / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        formatters = []
        for node in self._nodes:
            node.directory = self._directory / f"node{node.node_id}"
            (node.directory / "logs").mkdir(parents=True)
            config = node.directory / "server.properties"
            config.write_text(render_properties(self.server_properties(node.index)))
            command = self._java(
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(config),
                "--cluster-id",
                self.cluster_id,
                *self.format_args,
                options=START_JVM_OPTIONS + TOOL_HEAP,
                logs=node.directory / "logs",
            )
            formatters.append(
                subprocess.Popen(
                    die_with_parent(command),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + timeout
        failures = []
        for node, formatter in zip(self._nodes, formatters, strict=True):
            try:
                output, _ = formatter.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                formatter.kill()
                formatter.communicate()
                failures.append(f"node {node.node_id}: format did not finish in {timeout}s")
                continue
            if formatter.returncode != 0:
                cause = _cause(output.decode(errors="replace").splitlines())
                failures.append(
                    f"node {node.node_id}: format exited {formatter.returncode}: {cause}"
                )
        if failures:
            raise BrokerError("kafka-storage format failed: " + "; ".join(failures))

    def _launch(self, node: _Node) -> None:
        assert node.directory is not None
        node.stdout = node.directory / "logs" / "stdout.log"
        command = self._java(
            "kafka.Kafka",
            str(node.directory / "server.properties"),
            options=self.jvm_options,
            logs=node.directory / "logs",
        )
        with node.stdout.open("ab") as out:
            node.process = subprocess.Popen(
                die_with_parent(command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Ctrl-C in a terminal is for our supervisor; die_with_parent covers its death.
                start_new_session=True,
            )

    def _failure(self, node: _Node) -> str:
        """Why a node failed, from its log and output, for an exception message."""
        lines: list[str] = []
        for path in (self.log_path(node.index), node.stdout):
            if path is not None and path.is_file():
                lines += path.read_text(errors="replace").splitlines()
        return _cause(lines)

    def _wait_ready(self, nodes: Sequence[_Node], deadline: float) -> None:
        pending = list(nodes)
        while True:
            for node in pending:
                assert node.process is not None
                if node.process.poll() is not None:
                    raise BrokerError(
                        f"Apache Kafka node {node.node_id} exited with code"
                        f" {node.process.returncode}: {self._failure(node)}"
                    )
            expected = {node.node_id for node in self._nodes if node.running}
            waiting = []
            for node in pending:
                try:
                    live = metadata_brokers(self.host, node.ports["PLAINTEXT"], timeout=1.0)
                except (OSError, struct.error):
                    live = set()
                if not expected <= live:
                    waiting.append(node)
            pending = waiting
            if not pending:
                return
            if time.monotonic() > deadline:
                ids = ", ".join(str(node.node_id) for node in pending)
                raise BrokerError(
                    f"Apache Kafka node(s) {ids} did not report nodes {sorted(expected)} live"
                    f" in time: {self._failure(pending[0])}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every node and remove the storage.

        A single node is terminated (a clean shutdown takes about 0.3 s) and killed if it
        has not exited within ``timeout``. A cluster is killed: its storage goes anyway,
        and nodes shutting down together lose the quorum that their controlled shutdown
        waits for (measured: 5.8 s for three nodes, against a few ms).
        """
        self._stop(timeout)

    def _stop(self, timeout: float) -> bool:
        """stop(); whether every node exited by itself."""
        signum = signal.SIGTERM if self.nodes == 1 else signal.SIGKILL
        for node in self._nodes:
            self._signal(node, signum)
        deadline = time.monotonic() + timeout
        reaped = [self._reap(node, deadline) for node in self._nodes]  # every one of them
        exited = all(reaped)
        directory, self._directory = self._directory, None
        for node in self._nodes:
            node.directory = node.stdout = None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        return exited

    def _signal(self, node: _Node, signum: signal.Signals) -> None:
        if node.running:
            assert node.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.process.pid, signum)
                if signum != signal.SIGKILL:
                    os.kill(node.process.pid, signal.SIGCONT)  # a frozen node must run to exit

    def _reap(self, node: _Node, deadline: float) -> bool:
        """Wait for a signalled node, killing it at ``deadline``; False if it was killed."""
        process, node.process = node.process, None
        if process is None:
            return True
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return False
        return True

    # -- one node (chaos) --------------------------------------------------------------

    def stop_node(self, index: int, timeout: float = 30.0) -> None:
        """Shut node ``index`` down cleanly (SIGTERM: controlled shutdown); keeps its storage."""
        node = self._nodes[index]
        self._signal(node, signal.SIGTERM)
        self._reap(node, time.monotonic() + timeout)

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash); keeps its storage."""
        node = self._nodes[index]
        self._signal(node, signal.SIGKILL)
        self._reap(node, time.monotonic() + 10.0)

    def start_node(self, index: int, timeout: float = 60.0) -> None:
        """Start a stopped or killed node on its storage; wait until it reports all live."""
        node = self._nodes[index]
        if self._directory is None:
            raise BrokerError("start the broker before restarting one of its nodes")
        if node.running:
            return
        started = time.monotonic()
        self._launch(node)
        self._wait_ready([node], started + timeout)
        self.restart_seconds[index] = time.monotonic() - started

    def freeze(self, index: int | None = None) -> None:
        """SIGSTOP node ``index``, or every node, and wait until they are stopped (chaos)."""
        pids = self._pids_of(index)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            _wait_state(pid, stopped=True)

    def thaw(self, index: int | None = None) -> None:
        """SIGCONT node ``index``, or every node (chaos tests)."""
        for pid in self._pids_of(index):
            os.kill(pid, signal.SIGCONT)

    def frozen(self, index: int = 0) -> bool:
        """Whether node ``index`` is stopped by a signal now (Linux)."""
        pid = self.pids[index]
        return pid is not None and _process_state(pid) in ("T", "t")

    def _pids_of(self, index: int | None) -> list[int]:
        nodes = self._nodes if index is None else [self._nodes[index]]
        return [node.process.pid for node in nodes if node.running and node.process]
