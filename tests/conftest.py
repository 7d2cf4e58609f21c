"""Shared fixtures: a real tansu broker, a real Postgres database, per-test isolation.

- ``broker`` (session): the embedded tansu broker on a free loopback port.
- ``database_url`` (session): a fresh, migrated database, dropped at the end.
- ``settings`` (per test): points at both, with a unique topic prefix so tests never
  see each other's messages, private targets allowed (receivers are on loopback) and
  a short retry schedule; Kafka events are not validated against topic schemas.
- ``internal_topics`` (per test): the deliveries and dead-letter topics of ``settings``
  and the catalog's mirror topics, created as ``hooklane migrate`` does (routers and
  deliverers refuse to start without; publishing never creates a topic).
- ``pool`` (per test): an asyncpg pool on the test database.
- ``tenant`` / ``other_tenant`` (per test): a new tenant and its API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from cryptography.fernet import Fernet

from dispatcher.kafka.broker import EmbeddedBroker, free_port
from dispatcher.runtime.supervisor import create_kafka_topics
from dispatcher.settings import Settings
from dispatcher.store import db
from dispatcher.store.tenants import create_tenant

TEST_SECRET_KEY = Fernet.generate_key().decode()


@dataclass(frozen=True)
class TenantKey:
    """A test tenant and its API key."""

    id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@contextlib.contextmanager
def migrated_database(name: str = "test") -> Iterator[str]:
    """A fresh, migrated database ``hooklane_<name>_<random>``, dropped afterwards."""
    url = f"postgresql://postgres@127.0.0.1:5432/hooklane_{name}_{uuid.uuid4().hex[:10]}"
    asyncio.run(db.migrate(url))
    try:
        yield url
    finally:
        asyncio.run(db.drop_database(url))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with migrated_database() as url:
        yield url


@pytest.fixture
def settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        allow_private_targets=True,
        secret_key=TEST_SECRET_KEY,
        delivery_timeout_s=5.0,
        retry_schedule=(0.05, 0.1, 0.2, 0.4, 0.8, 1.0),
        park_after=2.0,
        deliveries_partitions=4,
        topic_partitions=4,
        kafka_replication_factor=1,  # what `hooklane up` uses on the embedded broker
        log_format="console",
        log_level="WARNING",
        # Most pipeline tests publish free-form data on the seeded topics; the tests of
        # the schema rule (tests/test_lifecycle_validation.py) turn it on.
        validate_events=False,
        # processes a test spawns serve their ops endpoints off the developer's 9400
        metrics_port=free_port(),
    )


@pytest.fixture
async def internal_topics(settings: Settings) -> Settings:
    # As `hooklane migrate`/`up` do: the internal topics and one mirror per catalog
    # topic (publishing never creates a topic).
    await create_kafka_topics(settings)
    return settings


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await db.create_pool(database_url, min_size=1, max_size=5)
    yield created
    await created.close()


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> TenantKey:
    async with pool.acquire() as conn:
        tenant_id, api_key = await create_tenant(conn, "Tenant A")
    return TenantKey(tenant_id, api_key)


@pytest.fixture
async def other_tenant(pool: asyncpg.Pool) -> TenantKey:
    async with pool.acquire() as conn:
        tenant_id, api_key = await create_tenant(conn, "Tenant B")
    return TenantKey(tenant_id, api_key)
