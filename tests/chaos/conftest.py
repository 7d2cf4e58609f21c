"""Chaos fixtures: a broker of the test's own (so it may be frozen), and the results table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.kafka.broker import EmbeddedBroker
from dispatcher.settings import Settings
from tests.chaos.harness import RESULTS, table
from tests.conftest import TEST_SECRET_KEY


@pytest.fixture
def chaos_broker() -> Iterator[EmbeddedBroker]:
    """A fresh tansu broker for one scenario: freezing it disturbs nobody else."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def chaos_settings(chaos_broker: EmbeddedBroker, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=chaos_broker.bootstrap_servers,
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
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the chaos table after the run: scenario, events, lost, duplicates, recovery."""
    if RESULTS:
        terminalreporter.write_sep("=", "chaos results")
        terminalreporter.write_line(table(RESULTS))
