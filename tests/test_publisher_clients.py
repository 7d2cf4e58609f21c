"""Platform services publish with their own Kafka clients: librdkafka's (confluent-kafka)
and the pure-Python kafka-python, compressed or not. Every event they write to a mirror
topic, whatever the codec, is routed and delivered, in the order it was published; and
a router that could not decode a codec refuses to start instead of wedging on it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import asyncpg
import orjson
import pytest

from dispatcher.kafka import broker
from dispatcher.router.router import Router
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    wait_until,
)
from tests.support.receiver import Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
# What each client can compress with here (kafka-python needs extra packages for
# snappy and zstd; confluent-kafka's wheel carries librdkafka with all of them).
CONFLUENT_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
KAFKA_PYTHON_CODECS = (None, "gzip", "lz4")


def event_message(tenant_id: str, index: int, codec: str | None) -> tuple[str, bytes]:
    """An event as DESIGN.md §3 has producers write it: its id and the JSON value."""
    event_id = str(uuid.uuid4())
    value = {
        "id": event_id,
        "topic": TOPIC,
        "tenant_id": tenant_id,
        "triggered_at": int(time.time()),
        # Compressible padding, so a compressed batch really is compressed.
        "data": {"registration_id": f"reg_{index}", "codec": str(codec), "pad": "ab" * 400},
    }
    return event_id, orjson.dumps(value)


def publish_with_confluent(bootstrap: str, topic: str, tenant_id: str) -> list[str]:
    """One flushed batch per codec through librdkafka; the event ids in publish order."""
    from confluent_kafka import Producer

    ids = []
    for index, codec in enumerate(CONFLUENT_CODECS):
        producer = Producer(
            {"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5}
        )
        for offset in range(2):
            event_id, value = event_message(tenant_id, index * 2 + offset, codec)
            producer.produce(topic, value=value, key=tenant_id.encode())
            ids.append(event_id)
        assert producer.flush(15) == 0, f"confluent-kafka could not deliver the {codec} batch"
    return ids


def publish_with_kafka_python(bootstrap: str, topic: str, tenant_id: str) -> list[str]:
    """One flushed batch per codec through kafka-python; the event ids in publish order."""
    from kafka import KafkaProducer

    ids = []
    for index, codec in enumerate(KAFKA_PYTHON_CODECS):
        producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
        try:
            for offset in range(2):
                event_id, value = event_message(tenant_id, index * 2 + offset, codec)
                producer.send(topic, value=value, key=tenant_id.encode()).get(timeout=15)
                ids.append(event_id)
        finally:
            producer.close(timeout=5)
    return ids


@pytest.mark.parametrize(
    ("publish", "codecs"),
    [
        (publish_with_confluent, CONFLUENT_CODECS),
        (publish_with_kafka_python, KAFKA_PYTHON_CODECS),
    ],
    ids=["confluent-kafka", "kafka-python"],
)
async def test_events_from_other_kafka_clients_are_delivered_whatever_the_codec(
    settings: Settings,
    pool: asyncpg.Pool,
    tenant: TenantKey,
    publish: Callable[[str, str, str], list[str]],
    codecs: tuple[str | None, ...],
) -> None:
    await ensure_mirror_topics(settings, [TOPIC])
    assert settings.kafka_bootstrap_servers is not None
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        async with running(settings):
            ids = await asyncio.to_thread(
                publish, settings.kafka_bootstrap_servers, settings.mirror_topic(TOPIC), tenant.id
            )
            await wait_until(lambda: len(rx.requests) >= len(ids), within=30.0)
    assert rx.event_ids() == ids
    received = [request.json()["data"]["codec"] for request in rx.requests]
    assert received == [str(codec) for codec in codecs for _ in range(2)]


def test_every_kafka_codec_can_be_decoded_here() -> None:
    """The install carries aiokafka's codecs (cramjam): nothing a publisher may send is
    a batch the router cannot read."""
    assert broker.missing_codecs() == []


async def test_a_router_without_a_codec_refuses_to_start(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without lz4 (say) the router would stop at the first lz4 batch, for every tenant
    on that partition: it says so and does not start."""
    from aiokafka import codec

    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    monkeypatch.setattr(codec, "has_zstd", lambda: False)
    router = Router(settings)
    with pytest.raises(broker.CodecsError, match="lz4, zstd-compressed"):
        await router.start()
