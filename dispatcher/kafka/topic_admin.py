"""The topics Hooklane creates, and the admin questions it asks of the cluster.

Only ``hooklane migrate``, ``hooklane topics ensure`` and ``hooklane up`` create the
internal topics (``create_topics``), with ``HOOKLANE_KAFKA_REPLICATION_FACTOR`` (unset:
the cluster's ``default.replication.factor``). Routers and deliverers only check that
they exist (``require_topics``) and refuse to start otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

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
