"""Topic creation for a real cluster: replication setting, internal topics, start-up check."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.admin import CreateTopicsRequest, CreateTopicsRequest_v3

from dispatcher.kafka.topic_admin import (
    MAX_MESSAGE_BYTES,
    TopicsError,
    capacity_warnings,
    create_topics,
    internal_topics,
    new_topics,
    require_topics,
    topic_configs,
)
from dispatcher.messages.wire import MAX_TASK_BYTES
from dispatcher.settings import Settings
from tests.conftest import on_kafka


@pytest.mark.parametrize(("setting", "sent"), [(None, -1), (1, 1), (3, 3)])
def test_create_topics_request_carries_the_replication_setting(
    setting: int | None, sent: int
) -> None:
    """The CreateTopics request sends the configured factor; unset sends -1 (cluster default)."""
    topics = new_topics({"hooklane.deliveries": 16, "hooklane.dead-letter": 1}, setting)
    request = CreateTopicsRequest(
        [AIOKafkaAdminClient._convert_new_topic_request(topic) for topic in topics],
        timeout=1000,
        validate_only=False,
    ).build(CreateTopicsRequest_v3)
    entries = request.create_topic_requests
    assert [(e[0], e[1], e[2], e[3]) for e in entries] == [
        ("hooklane.deliveries", 16, sent, []),
        ("hooklane.dead-letter", 1, sent, []),
    ]
    CreateTopicsRequest_v3.decode(request.encode())  # a well-formed request on the wire


def test_internal_topics_are_deliveries_and_dead_letter() -> None:
    """The internal topics are named by the prefix; deliveries get the configured partitions."""
    settings = Settings(topic_prefix="x.", deliveries_partitions=5)
    assert internal_topics(settings) == {"x.deliveries": 5, "x.dead-letter": 1}


@pytest.mark.parametrize(
    ("partitions", "configured", "members", "warnings"),
    [
        (16, 16, 0, 0),
        (16, 16, 16, 0),
        (8, 16, 0, 1),
        (4, 4, 5, 1),
        (2, 4, 3, 2),
    ],
)
def test_capacity_warnings(partitions: int, configured: int, members: int, warnings: int) -> None:
    """Fewer partitions than configured, and more deliverers than partitions, are reported."""
    found = capacity_warnings(partitions, configured, members)
    assert len(found) == warnings
    if members > partitions:
        assert f"{members - partitions} of them get no work" in found[-1]


async def describe(settings: Settings, names: list[str]) -> dict[str, list[int]]:
    """Replica count of each partition of each topic, from the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        topics = await admin.describe_topics()
    finally:
        await admin.close()
    return {
        t["topic"]: [len(p["replicas"]) for p in t["partitions"]]
        for t in topics
        if t["topic"] in names
    }


@pytest.mark.parametrize("replication", [1, 3])
async def test_create_topics_honours_replication_on_the_broker(
    settings: Settings, replication: int
) -> None:
    """The broker records the replication asked for (tansu keeps the count even on one node;
    a one-node Apache Kafka refuses 3 with an error that names the setting)."""
    settings = settings.replace(kafka_replication_factor=replication)
    if on_kafka() and replication > 1:
        with pytest.raises(TopicsError, match="KAFKA_REPLICATION_FACTOR"):
            await create_topics(settings, ["A.B"])
        return
    states = await create_topics(settings, ["A.B"])
    names = [settings.deliveries_topic, settings.dead_letter_topic, settings.mirror_topic("A.B")]
    assert [s.name for s in states] == names
    assert all(s.created for s in states)
    replicas = await describe(settings, names)
    assert replicas == {
        settings.deliveries_topic: [replication] * settings.deliveries_partitions,
        settings.dead_letter_topic: [replication],
        settings.mirror_topic("A.B"): [replication] * settings.topic_partitions,
    }
    again = await create_topics(settings, ["A.B"])
    assert not any(s.created for s in again)  # idempotent: nothing created twice


async def test_cluster_default_replication_is_accepted_by_the_embedded_broker(
    settings: Settings,
) -> None:
    """Unset replication (-1: the broker's default) creates the topics on tansu too."""
    states = await create_topics(settings.replace(kafka_replication_factor=None))
    assert [(s.name, s.created, s.replicas) for s in states] == [
        (settings.deliveries_topic, True, 1),
        (settings.dead_letter_topic, True, 1),
    ]


async def test_require_topics_refuses_missing_topics_without_creating_them(
    settings: Settings,
) -> None:
    """The start-up check names `hooklane migrate` and leaves the cluster unchanged."""
    settings = settings.replace(topic_prefix=f"missing{uuid.uuid4().hex[:6]}.")
    with pytest.raises(TopicsError, match="hooklane migrate") as raised:
        await require_topics(settings)
    assert settings.deliveries_topic in str(raised.value)
    assert await describe(settings, [settings.deliveries_topic]) == {}


async def test_require_topics_reports_the_partition_count(internal_topics: Settings) -> None:
    """With the internal topics in place the check passes and returns the partitions."""
    assert await require_topics(internal_topics) == internal_topics.deliveries_partitions


async def test_created_topics_carry_their_configs_as_the_broker_reports_them(
    settings: Settings,
) -> None:
    """Size limit on every topic, retention on deliveries and dead letters (Apache Kafka)."""
    if not on_kafka():
        pytest.skip("tansu does not report topic configs")
    settings = settings.replace(dead_letter_retention=12 * 86400.0, retry_window=10 * 86400.0)
    await create_topics(settings, ["A.B"])
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        mirror = settings.mirror_topic("A.B")
        names = [settings.deliveries_topic, settings.dead_letter_topic, mirror]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    reported = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}
        for response in responses
        for resource in response.resources
    }
    day_ms = 86400 * 1000
    assert reported[settings.deliveries_topic]["retention.ms"] == str(11 * day_ms)
    assert reported[settings.dead_letter_topic]["retention.ms"] == str(12 * day_ms)
    assert reported[mirror]["retention.ms"] == str(7 * day_ms)  # the cluster's default
    for name in names:
        assert reported[name]["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
        assert int(reported[name]["max.message.bytes"]) > MAX_TASK_BYTES


def test_min_insync_replicas_is_two_from_three_replicas(settings: Settings) -> None:
    """An acknowledged write survives a broker's loss where there are 3 replicas or more."""
    for replication, expected in [(None, None), (1, None), (2, None), (3, "2"), (5, "2")]:
        configs = topic_configs(
            settings.replace(kafka_replication_factor=replication), settings.deliveries_topic
        )
        assert configs.get("min.insync.replicas") == expected
