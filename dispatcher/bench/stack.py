"""The system under test: a fresh database, an embedded broker, webhooks, and processes.

Everything a scenario needs to stand up Hooklane the way production runs it (router
and deliverer as separate processes) and to tear it down again.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from dispatcher.bench.procs import Child, cpu_seconds, memory_kb
from dispatcher.delivery.secrets import SecretBox, generate_secret, new_key, preview
from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.kafka.broker import EmbeddedBroker, LaunchedBroker, embedded_settings, free_port
from dispatcher.kafka.connection import connection_env
from dispatcher.kafka.jvm_process import BROKER_HEAP, START_JVM_OPTIONS
from dispatcher.runtime.supervisor import child_env, create_kafka_topics
from dispatcher.settings import Settings
from dispatcher.store import db

BENCH_TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
# Apache Kafka measured at its peak: the launcher's fast-start options without the C1-only
# limit on the JIT (C2 compiles the hot fetch and produce paths after a few seconds).
BENCH_JVM_OPTIONS: tuple[str, ...] = (
    *(option for option in START_JVM_OPTIONS if not option.startswith("-XX:TieredStopAtLevel")),
    *BROKER_HEAP,
)


def bench_database_url(base_url: str, stamp: str) -> str:
    """``base_url`` pointing at the throw-away database ``hooklane_bench_<stamp>``."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/hooklane_bench_{stamp}"))


def webhook_url(port: int, mode: str, index: int | str) -> str:
    """The receiver URL of webhook number ``index``; the path picks the answer."""
    return f"http://127.0.0.1:{port}/{mode}/w{index}"


def tracing_env(endpoint: str) -> dict[str, str]:
    """What ``--tracing`` adds: every span exported to ``endpoint`` by the default batcher."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "always_on"}


def dispatcher_env(
    base: Mapping[str, str], settings: Settings, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of router and deliverer: ``base`` plus the bench's settings.

    The caller's ``OTEL_*`` variables are left out: spans are exported only with
    ``--tracing`` (``tracing_env``), so a developer's collector never skews a run.
    """
    env = {name: value for name, value in base.items() if not name.startswith("OTEL_")}
    env.update(
        {
            "HOOKLANE_DATABASE_URL": settings.database_url,
            **connection_env(settings),
            "HOOKLANE_TOPIC_PREFIX": settings.topic_prefix,
            "HOOKLANE_SECRET_KEY": settings.secret_key or "",
            "HOOKLANE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLANE_LOG_LEVEL": settings.log_level,
            "HOOKLANE_LOG_FORMAT": "json",
        }
    )
    env.update(overrides or {})
    return env


@dataclass(frozen=True, slots=True)
class Hooks:
    """The webhooks of one scenario and their tenants (an event goes to all of a tenant's)."""

    tenant_ids: tuple[str, ...]
    webhook_ids: tuple[str, ...]
    urls: tuple[str, ...]


async def create_webhooks(
    pool: asyncpg.Pool, box: SecretBox, urls: Sequence[str], per_tenant: int = 1
) -> Hooks:
    """Insert ordered, ENABLED webhooks, ``per_tenant`` to a tenant (COPY: 10,000 in a blink).

    With one webhook per tenant each event goes to one webhook; the fan-out scenario
    puts every webhook on one tenant.

    Rows go in with SQL rather than through the API so setup time stays out of the
    run; the secret is encrypted exactly as the webhook store does.
    """
    run = uuid.uuid4().hex[:8]
    tenants = -(-len(urls) // per_tenant)
    tenant_ids = tuple(f"ten_bench_{run}_{i}" for i in range(tenants))
    owners = [tenant_ids[i // per_tenant] for i in range(len(urls))]
    webhook_ids = tuple(str(uuid.uuid4()) for _ in urls)
    secret = generate_secret()  # one secret for all: encryption cost is not under test
    ciphertext, shown = box.encrypt(secret), preview(secret)
    async with pool.acquire() as conn, conn.transaction():
        await conn.copy_records_to_table(
            "tenants",
            records=[(tid, f"bench {tid}") for tid in tenant_ids],
            columns=["id", "name"],
        )
        await conn.copy_records_to_table(
            "webhooks",
            records=[
                (uuid.UUID(wid), tid, url, [BENCH_TOPIC], ciphertext, shown)
                for wid, tid, url in zip(webhook_ids, owners, urls, strict=True)
            ],
            columns=["id", "tenant_id", "url", "topics", "secret_ciphertext", "secret_preview"],
        )
    return Hooks(tenant_ids, webhook_ids, tuple(urls))


class Stack:
    """A fresh database and secret key for the run; a fresh broker per scenario."""

    def __init__(
        self,
        base: Settings,
        log_dir: Path,
        log_level: str,
        metrics: bool = True,
        tracing_endpoint: str | None = None,
        broker: str = "tansu",
    ) -> None:
        stamp = time.strftime("%Y%m%d_%H%M%S") + "_" + uuid.uuid4().hex[:4]
        self.settings = base.replace(
            database_url=bench_database_url(base.database_url, stamp),
            secret_key=new_key(),
            allow_private_targets=True,
            log_level=log_level,
        )
        self.log_dir = log_dir
        self.metrics = metrics  # False: router and deliverer run without metrics
        self.tracing_endpoint = tracing_endpoint  # set: they export spans there
        self.box = SecretBox.from_setting(self.settings.secret_key)
        self.pool: asyncpg.Pool | None = None
        self.broker_kind = broker  # "tansu" (embedded) or "kafka" (one Apache Kafka node)
        self.broker: LaunchedBroker | None = None

    async def open(self) -> None:
        """Create and migrate the bench database."""
        await db.migrate(self.settings.database_url)
        self.pool = await db.create_pool(self.settings.database_url, min_size=1, max_size=4)

    async def close(self, keep_database: bool = False) -> None:
        """Stop the broker, close the pool and drop the database unless kept."""
        self.stop_broker()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if not keep_database:
            await db.drop_database(self.settings.database_url)

    async def fresh_broker(self, scenario: str) -> Settings:
        """A new broker of ``broker_kind`` and topic prefix for ``scenario``; its settings.

        tansu runs with ``embedded_settings``; Apache Kafka with the settings' own
        defaults (made for it) and replication 1.
        """
        self.stop_broker()
        broker: LaunchedBroker
        if self.broker_kind == "kafka":
            broker = ApacheKafkaBroker(jvm_options=BENCH_JVM_OPTIONS)
        else:
            broker = EmbeddedBroker()
        # The default executor's threads live as long as the loop: so does the broker
        # (it dies with the thread that started it).
        await asyncio.to_thread(broker.start, 120.0)
        self.broker = broker
        settings = self.settings.replace(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=f"bench{uuid.uuid4().hex[:6]}.{scenario}.",
        )
        if self.broker_kind == "kafka":
            settings = settings.replace(kafka_replication_factor=1)
        else:
            settings = embedded_settings(settings, os.environ)
        await create_kafka_topics(settings)
        return settings

    def broker_cpu(self) -> float:
        """CPU seconds the scenario's broker used so far (0 when unknown)."""
        pid = self.broker.pid if self.broker is not None else None
        return (cpu_seconds(pid) or 0.0) if pid is not None else 0.0

    def broker_peak_rss_kb(self) -> int:
        """The scenario's broker's peak RSS (VmHWM) in kB so far (0 when unknown)."""
        pid = self.broker.pid if self.broker is not None else None
        return (memory_kb(pid)[1] or 0) if pid is not None else 0

    def stop_broker(self) -> None:
        """Stop the scenario's broker, if any."""
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    async def webhooks(self, urls: Sequence[str], per_tenant: int = 1) -> Hooks:
        """Create a webhook per URL, ``per_tenant`` of them on each new tenant."""
        assert self.pool is not None, "open() first"
        return await create_webhooks(self.pool, self.box, urls, per_tenant)

    async def parked_webhooks(self) -> int:
        """How many webhooks are parked in Postgres right now."""
        assert self.pool is not None
        count: int = await self.pool.fetchval("SELECT count(*) FROM parked_webhooks")
        return count

    def dispatcher(
        self, settings: Settings, overrides: Mapping[str, str] | None = None
    ) -> tuple[Child, Child, dict[str, str]]:
        """Router and deliverer children (not started) and their environment.

        Each serves its ops endpoints on a port of its own (one shared port would leave
        the second without /metrics). A stack without ``metrics`` runs the bare services
        (``dispatcher.bench.bare``): what observability costs is the difference.
        """
        env = dispatcher_env(child_env(settings), settings, overrides)
        if self.tracing_endpoint is not None:
            env.update(tracing_env(self.tracing_endpoint))
        children = []
        for name in ("router", "deliverer"):
            port = {"HOOKLANE_METRICS_PORT": str(free_port())}
            if self.metrics:
                children.append(Child(name, f"dispatcher.{name}", env=port))
            else:
                children.append(Child(name, "dispatcher.bench.bare", [name]))
        router, deliverer = children
        return router, deliverer, env


class Receiver:
    """The receiver process and a client for its control endpoints."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.child = Child("receiver", "dispatcher.bench.receiver", ["--port", str(port)])
        self._session: aiohttp.ClientSession | None = None

    async def start(self, env: Mapping[str, str], log_dir: Path) -> None:
        """Start the receiver and wait until it listens."""
        await self.child.start(env, log_dir, stdout_pipe=True)
        process = self.child.process
        assert process is not None and process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        if not line.startswith(b"listening "):
            raise RuntimeError(f"the receiver did not start: {self.child.log_tail()}")
        self.port = int(line.split()[1])
        self._session = aiohttp.ClientSession(f"http://127.0.0.1:{self.port}")

    async def stats(self) -> dict[str, Any]:
        """The receiver's counters."""
        assert self._session is not None
        async with self._session.get("/_stats") as response:
            stats: dict[str, Any] = await response.json()
            return stats

    async def samples(self, which: str) -> list[float]:
        """``arrivals`` or ``latencies`` of unique ok deliveries, in seconds."""
        from array import array

        assert self._session is not None
        async with self._session.get(f"/_{which}") as response:
            values = array("d")
            values.frombytes(await response.read())
            return values.tolist()

    async def reset(self) -> None:
        """Forget everything received so far (after a warm-up)."""
        assert self._session is not None
        async with self._session.post("/_reset") as response:
            response.raise_for_status()

    async def stop(self) -> None:
        """Stop the process and close the control client."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.child.stop(grace=3)
