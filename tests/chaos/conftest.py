"""Chaos fixtures: a broker of the test's own (so it may be frozen), and the results table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.kafka.broker import EmbeddedBroker, LaunchedBroker
from dispatcher.kafka.kafka_release import KafkaToolMissing, ensure_kafka
from dispatcher.settings import DEFAULT_FETCH_MAX_WAIT_MS, Settings
from tests.chaos.harness import RESULTS, table
from tests.conftest import TEST_SECRET_KEY, on_kafka


@pytest.fixture
def chaos_broker() -> Iterator[LaunchedBroker]:
    """A fresh broker for one scenario (the suite's kind): freezing it disturbs nobody."""
    running: LaunchedBroker = ApacheKafkaBroker() if on_kafka() else EmbeddedBroker()
    with running:
        yield running


@pytest.fixture
def chaos_settings(chaos_broker: LaunchedBroker, database_url: str) -> Settings:
    return settings_for(chaos_broker, database_url)


@pytest.fixture
def cluster() -> Iterator[ApacheKafkaBroker]:
    """Three Apache Kafka nodes (replication 3, min.insync.replicas 2) for one scenario."""
    try:
        ensure_kafka()
    except KafkaToolMissing as exc:
        pytest.skip(f"the cluster scenarios need Apache Kafka: {exc}")
    with ApacheKafkaBroker(nodes=3) as running:
        yield running


@pytest.fixture
def cluster_settings(cluster: ApacheKafkaBroker, database_url: str) -> Settings:
    """Every topic Hooklane creates with replication 3; producers with acks=all."""
    return settings_for(cluster, database_url).replace(
        kafka_replication_factor=3,
        kafka_idempotence=True,
        fetch_max_wait_ms=DEFAULT_FETCH_MAX_WAIT_MS,
    )


def settings_for(broker: LaunchedBroker, database_url: str) -> Settings:
    """Chaos settings: short retries and timeouts, four partitions, JSON logs."""
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"chaos{uuid.uuid4().hex[:6]}.",
        allow_private_targets=True,
        secret_key=TEST_SECRET_KEY,
        delivery_timeout_s=5.0,
        retry_schedule=(0.05, 0.1, 0.2, 0.4, 0.8, 1.0),
        park_after=30.0,
        deliveries_partitions=4,
        topic_partitions=4,
        log_format="json",
        log_level="INFO",
        kafka_idempotence=on_kafka(),
        fetch_max_wait_ms=DEFAULT_FETCH_MAX_WAIT_MS if on_kafka() else 10,
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the chaos table after the run: scenario, events, lost, duplicates, recovery."""
    if RESULTS:
        terminalreporter.write_sep("=", "chaos results")
        terminalreporter.write_line(table(RESULTS))
