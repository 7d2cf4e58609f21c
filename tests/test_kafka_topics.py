"""Topic creation for a real cluster: replication setting, internal topics, start-up check."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateTopicsRequest, CreateTopicsRequest_v3

from dispatcher.kafka.broker import (
    TopicsError,
    capacity_warnings,
    create_topics,
    internal_topics,
    new_topics,
    require_topics,
)
from dispatcher.settings import Settings


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
    """The broker records the replication asked for (tansu keeps the count even on one node)."""
    settings = settings.replace(kafka_replication_factor=replication)
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
