"""Apache Kafka (KRaft) as a pinned tool: a launcher for tests and chaos runs.

The sibling of ``dispatcher.kafka.broker.EmbeddedBroker`` (tansu) for what tansu lacks: the
idempotent producer, transactions and ``read_committed``, topic configs, replication
across brokers. The jars and the java come from ``dispatcher.kafka.kafka_release``; how a
node is configured, from ``dispatcher.kafka.kraft_node``; its JVM options and process
watching, from ``dispatcher.kafka.jvm_process``.

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

import contextlib
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from dispatcher.kafka.broker import BrokerError, StartedWhileEntered
from dispatcher.kafka.jvm_process import (
    BROKER_HEAP,
    LOG4J2,
    START_JVM_OPTIONS,
    TOOL_HEAP,
    failure_cause,
    process_state,
    rss_bytes,
    wait_state,
)
from dispatcher.kafka.kafka_release import KafkaRuntime, ensure_kafka
from dispatcher.kafka.kraft_node import (
    KraftNode,
    Listener,
    distinct_port,
    new_cluster_id,
    render_properties,
    server_properties,
)
from dispatcher.kafka.metadata_probe import metadata_brokers
from dispatcher.parent_death import die_with_parent

log = structlog.get_logger(__name__)


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
        self.cluster_id = new_cluster_id()
        # seconds: formatting the storage, start() as a whole, each node's last start_node()
        self.format_seconds: float | None = None
        self.start_seconds: float | None = None
        self.restart_seconds: dict[int, float] = {}
        taken: set[int] = {port} if port else set()
        self._nodes = [
            KraftNode(
                i,
                {
                    name: (port if port and name == "PLAINTEXT" else distinct_port(host, taken))
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
        return rss_bytes(process.pid) if process and process.poll() is None else None

    def log_path(self, index: int = 0) -> Path | None:
        """A node's log4j file (WARN and above unless ``log_level`` says otherwise)."""
        directory = self._nodes[index].directory
        return directory / "logs" / "server.log" if directory else None

    # -- configuration -----------------------------------------------------------------

    def server_properties(self, index: int) -> dict[str, str]:
        """The server.properties of node ``index`` (its directory must exist)."""
        generated = server_properties(
            self._nodes, index, self.host, self.listeners, self.partitions
        )
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
        (self._directory / "log4j2.properties").write_text(LOG4J2.format(level=self.log_level))
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
                cause = failure_cause(output.decode(errors="replace").splitlines())
                failures.append(
                    f"node {node.node_id}: format exited {formatter.returncode}: {cause}"
                )
        if failures:
            raise BrokerError("kafka-storage format failed: " + "; ".join(failures))

    def _launch(self, node: KraftNode) -> None:
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

    def _failure(self, node: KraftNode) -> str:
        """Why a node failed, from its log and output, for an exception message."""
        lines: list[str] = []
        for path in (self.log_path(node.index), node.stdout):
            if path is not None and path.is_file():
                lines += path.read_text(errors="replace").splitlines()
        return failure_cause(lines)

    def _wait_ready(self, nodes: Sequence[KraftNode], deadline: float) -> None:
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

    def _signal(self, node: KraftNode, signum: signal.Signals) -> None:
        if node.running:
            assert node.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.process.pid, signum)
                if signum != signal.SIGKILL:
                    os.kill(node.process.pid, signal.SIGCONT)  # a frozen node must run to exit

    def _reap(self, node: KraftNode, deadline: float) -> bool:
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
            wait_state(pid, stopped=True)

    def thaw(self, index: int | None = None) -> None:
        """SIGCONT node ``index``, or every node (chaos tests)."""
        for pid in self._pids_of(index):
            os.kill(pid, signal.SIGCONT)

    def frozen(self, index: int = 0) -> bool:
        """Whether node ``index`` is stopped by a signal now (Linux)."""
        pid = self.pids[index]
        return pid is not None and process_state(pid) in ("T", "t")

    def _pids_of(self, index: int | None) -> list[int]:
        nodes = self._nodes if index is None else [self._nodes[index]]
        return [node.process.pid for node in nodes if node.running and node.process]
