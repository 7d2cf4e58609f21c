"""Shared fixtures: a real Kafka broker, a real Postgres database, per-test isolation.

- ``broker`` (session): Apache Kafka (the pinned release of deploy/kafka/pom.xml, one
  KRaft node per test worker) on free loopback ports, or the embedded tansu.
  ``HOOKLANE_TEST_BROKER``: ``kafka`` (fail without Java 17+ and Maven: CI sets it),
  ``tansu``, or ``auto`` (the default: Apache Kafka where Java and Maven are found,
  else tansu, said in one line at the start).
- ``database_url`` (session): a fresh, migrated database, dropped at the end, on the
  Postgres at 127.0.0.1:5432, or, where none answers (a newcomer's fresh machine), on
  an embedded Postgres per test worker as ``make run`` uses (``.hooklane/test-pgdata-*``;
  ``HOOKLANE_TEST_POSTGRES=embedded`` forces it).
- ``settings`` (per test): points at both, with a unique topic prefix so tests never
  see each other's messages, private targets allowed (receivers are on loopback) and
  a short retry schedule; Kafka events are not validated against topic schemas.
- ``internal_topics`` (per test): the deliveries and dead-letter topics of ``settings``
  and the catalog's mirror topics, created as ``hooklane migrate`` does (routers and
  deliverers refuse to start without; publishing never creates a topic).
- ``pool`` (per test): an asyncpg pool on the test database.
- ``tenant`` / ``other_tenant`` (per test): a new tenant and its API key.

Hypothesis profiles: ``hooklane`` (loaded by default: ``make test``) keeps each property
test at a bounded 100 examples with no per-example deadline (the machine is shared);
``fuzz`` (``make fuzz``: ``--hypothesis-profile=fuzz``) runs thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import structlog
from cryptography.fernet import Fernet
from hypothesis import settings as hypothesis_settings
from structlog._config import BoundLoggerLazyProxy

from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.kafka.broker import EmbeddedBroker, LaunchedBroker, free_port
from dispatcher.kafka.kafka_release import KafkaToolMissing, ensure_kafka
from dispatcher.runtime.embedded_db import EmbeddedPostgres
from dispatcher.runtime.supervisor import create_kafka_topics
from dispatcher.settings import DEFAULT_FETCH_MAX_WAIT_MS, Settings
from dispatcher.store import db
from dispatcher.store.tenants import create_tenant

TEST_SECRET_KEY = Fernet.generate_key().decode()

hypothesis_settings.register_profile("hooklane", max_examples=100, deadline=None)
hypothesis_settings.register_profile("fuzz", max_examples=3000, deadline=None)
# `--hypothesis-profile=fuzz` is applied after this module is imported, so it wins.
hypothesis_settings.load_profile("hooklane")


@dataclass(frozen=True)
class TenantKey:
    """A test tenant and its API key."""

    id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


TEST_BROKER = "HOOKLANE_TEST_BROKER"


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """Logging as it was before the test, whatever the test configured.

    ``configure_logging`` is process-wide. A command's ``main`` run in-process (``hooklane
    bench`` in tests/test_bench.py: WARNING) or a test of the configuration
    (tests/test_logs_stream.py: INFO) left it filtering below that level for every later
    test of the worker, and ``cache_logger_on_first_use`` froze that filter into each
    module's logger on its first call. Tests that wait for an info or debug event with
    ``capture_logs`` (backpressure's ``deliverer.paused``, the scheduler's
    ``scheduler.sleeping``) then waited until they timed out, but only when such a test
    had run before them on the same worker.
    """
    config = structlog.get_config()
    processors = config["processors"]
    saved = {**config, "processors": list(processors)}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    now = structlog.get_config()
    if (
        any(now[key] is not config[key] for key in config)
        or now["processors"] != saved["processors"]
    ):
        processors[:] = saved["processors"]  # the list loggers of before the test hold
        structlog.configure(**{**saved, "processors": processors})
        _forget_cached_loggers()
    root.handlers[:] = handlers
    root.setLevel(level)


def _forget_cached_loggers() -> None:
    """Make every module-level structlog logger assemble itself again on its next call
    (with ``cache_logger_on_first_use`` a proxy replaces its ``bind`` on first use)."""
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, BoundLoggerLazyProxy):
                value.__dict__.pop("bind", None)


@functools.cache
def test_broker() -> tuple[str, str]:
    """Which broker the suite runs on (``kafka`` or ``tansu``), and why, in one line."""
    wanted = os.environ.get(TEST_BROKER, "auto").strip().lower() or "auto"
    if wanted not in {"auto", "kafka", "tansu"}:
        raise pytest.UsageError(f"{TEST_BROKER}={wanted!r}: expected kafka, tansu or auto")
    if wanted == "tansu":
        return "tansu", f"broker: tansu ({TEST_BROKER}=tansu)"
    try:
        runtime = ensure_kafka()
    except KafkaToolMissing as exc:
        if wanted == "kafka":
            raise pytest.UsageError(f"{TEST_BROKER}=kafka, but {exc}") from None
        return "tansu", f"broker: tansu, as Apache Kafka cannot run here: {exc}"
    return "kafka", f"broker: Apache Kafka {runtime.version} ({TEST_BROKER}={wanted})"


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [test_broker()[1]]
    if not _answers(LOCAL_POSTGRES) or os.environ.get(TEST_POSTGRES):
        lines.append("postgres: embedded where none answers at 127.0.0.1:5432 (per worker)")
    return lines


def on_kafka() -> bool:
    """Whether the suite runs on Apache Kafka (tests of its features skip on tansu)."""
    return test_broker()[0] == "kafka"


@pytest.fixture(scope="session")
def broker() -> Iterator[LaunchedBroker]:
    running: LaunchedBroker = ApacheKafkaBroker() if on_kafka() else EmbeddedBroker()
    with running:
        yield running


LOCAL_POSTGRES = ("127.0.0.1", 5432)
TEST_POSTGRES = "HOOKLANE_TEST_POSTGRES"
_embedded: list[EmbeddedPostgres] = []


def _answers(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
        return True
    return False


@functools.cache
def postgres() -> tuple[str, str]:
    """The URL of a database ``{name}`` on the tests' Postgres, and a line saying which."""
    forced = os.environ.get(TEST_POSTGRES, "").strip().lower() == "embedded"
    if not forced and _answers(LOCAL_POSTGRES):
        return "postgresql://postgres@127.0.0.1:5432/{name}", "postgres: 127.0.0.1:5432"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    server = EmbeddedPostgres(Path(".hooklane") / f"test-pgdata-{worker}")
    url = server.start()  # postgresql://postgres:@/hooklane?host=<dir>
    _embedded.append(server)
    why = f"{TEST_POSTGRES}=embedded" if forced else "no Postgres answers at 127.0.0.1:5432"
    return url.replace("/hooklane?", "/{name}?", 1), f"postgres: embedded ({why})"


def database_url_for(name: str) -> str:
    """The URL of database ``name`` on the tests' Postgres (created by ``db.migrate``)."""
    return postgres()[0].format(name=name)


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _embedded:
        _embedded.pop().stop()


@contextlib.contextmanager
def migrated_database(name: str = "test") -> Iterator[str]:
    """A fresh, migrated database ``hooklane_<name>_<random>``, dropped afterwards."""
    url = database_url_for(f"hooklane_{name}_{uuid.uuid4().hex[:10]}")
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
def settings(broker: LaunchedBroker, database_url: str) -> Settings:
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
        # tansu has no idempotent producer and answers fetches best with a short wait
        # (EMBEDDED_DEFAULTS); Apache Kafka runs on the production defaults.
        kafka_idempotence=on_kafka(),
        fetch_max_wait_ms=DEFAULT_FETCH_MAX_WAIT_MS if on_kafka() else 10,
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
