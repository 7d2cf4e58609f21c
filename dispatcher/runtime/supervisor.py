"""``hooklane up``: the whole stack on embedded defaults, supervised.

Starts the embedded broker (unless a Kafka cluster is configured), prepares Postgres
(the local server, or an embedded one where none answers and no URL was set), applies
migrations, creates the Kafka topics (replication 1 on the embedded broker), then runs
the API, router and deliverer as child processes, restarting any that dies (the pause
grows with quick deaths and resets once a child ran ``HEALTHY_AFTER_S``). Without
``HOOKLANE_SECRET_KEY`` it uses a development key kept in ``.hooklane/secret.key`` and
hands it to the children explicitly. SIGINT/SIGTERM stop everything, children first.

If the supervisor is SIGKILLed instead, the children and the embedded broker die with it
on Linux (``dispatcher.parent_death``), undrained as in any crash, rather than holding
the API and metrics ports the next ``hooklane up`` binds. The embedded Postgres does not
(see ``dispatcher.runtime.embedded_db``): the next ``hooklane up`` adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import structlog

from dispatcher.delivery.secrets import dev_key
from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.kafka.broker import BrokerError, EmbeddedBroker, LaunchedBroker, embedded_settings
from dispatcher.kafka.connection import connection_env
from dispatcher.kafka.kafka_release import ensure_kafka
from dispatcher.kafka.topic_admin import TopicState, create_topics
from dispatcher.parent_death import die_with_parent
from dispatcher.runtime.embedded_db import EmbeddedPostgres
from dispatcher.settings import (
    DEFAULT_DATABASE_URL,
    ENV_FILE,
    PREFIX,
    Settings,
    read_env_file,
    write_env_file,
)
from dispatcher.store import db

log = structlog.get_logger(__name__)

DEV_TENANT = "ten_dev"
CHILD_MODULES = ("api", "dispatcher.router", "dispatcher.deliverer")
# Each child serves /metrics, /healthz, /readyz on HOOKLANE_METRICS_PORT + its offset.
METRICS_PORT_OFFSETS = {"api": 0, "dispatcher.router": 1, "dispatcher.deliverer": 2}
STOP_GRACE_S = 20.0
DEV_KEY_FILE = Path(".hooklane") / "secret.key"
# A child that ran this long was healthy: its next death restarts the backoff.
HEALTHY_AFTER_S = 30.0
MAX_RESTART_PAUSE_S = 30.0


@dataclass
class Child:
    """One supervised process."""

    module: str
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)


async def prepare_database(
    settings: Settings, explicit_url: bool, fallback: EmbeddedPostgres
) -> Settings:
    """Migrate the configured database; where none answers in dev, start ``fallback``.

    Only the default URL falls back: a URL someone set is the database they mean.
    """
    try:
        await db.migrate(settings.database_url)
        return settings
    except db.DatabaseError:
        if explicit_url or settings.database_url != DEFAULT_DATABASE_URL:
            raise
    log.warning("postgres.unreachable", url=settings.database_url, fallback=str(fallback.pgdata))
    settings = settings.replace(database_url=fallback.start())
    await db.migrate(settings.database_url)
    return settings


async def create_kafka_topics(settings: Settings) -> list[TopicState]:
    """Create the deliveries, dead-letter and mirror topics (one per catalog topic)."""
    from dispatcher.store.topic_store import topic_names

    conn = await asyncpg.connect(settings.database_url)
    try:
        names = await topic_names(conn)
    finally:
        await conn.close()
    return await create_topics(settings, sorted(names))


async def dev_api_key(settings: Settings) -> str:
    """A fresh API key for the development tenant."""
    from dispatcher.store.api_key_store import issue_api_key
    from dispatcher.store.tenants import ensure_tenant

    conn = await asyncpg.connect(settings.database_url)
    try:
        await ensure_tenant(conn, DEV_TENANT, "Development tenant")
        return await issue_api_key(conn, DEV_TENANT)
    finally:
        await conn.close()


def stack_env(settings: Settings) -> dict[str, str]:
    """The running stack's addresses and topic layout as ``HOOKLANE_*`` variables.

    The children get them, and ``.hooklane/env`` holds them for the other commands run
    in the checkout (``publish``, ``status``, ``topics ensure``, ``portal-link``...), so
    those reach this stack and create topics with the partition counts it uses.
    """
    env = {
        "HOOKLANE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "HOOKLANE_DATABASE_URL": settings.database_url,
        "HOOKLANE_API_HOST": settings.api_host,
        "HOOKLANE_API_PORT": str(settings.api_port),
        "HOOKLANE_METRICS_HOST": settings.metrics_host,
        "HOOKLANE_METRICS_PORT": str(settings.metrics_port),
        "HOOKLANE_TOPIC_PREFIX": settings.topic_prefix,
        # The embedded broker's tuning (``embedded_settings``) reaches every command.
        "HOOKLANE_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "HOOKLANE_DELIVERIES_PARTITIONS": str(settings.deliveries_partitions),
        "HOOKLANE_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
        "HOOKLANE_KAFKA_IDEMPOTENCE": "true" if settings.kafka_idempotence else "false",
    }
    if settings.kafka_replication_factor is not None:
        env["HOOKLANE_KAFKA_REPLICATION_FACTOR"] = str(settings.kafka_replication_factor)
    return env


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of child processes: ours plus the resolved endpoints and the Kafka
    connection (credentials included: never written to ``.hooklane/env``)."""
    env = {**os.environ, **stack_env(settings), **connection_env(settings)}
    # Explicit, so every child encrypts and decrypts with the same key wherever it runs.
    env["HOOKLANE_SECRET_KEY"] = settings.secret_key or ""
    return env


def publish_stack_env(settings: Settings, path: Path = ENV_FILE) -> dict[str, str]:
    """Write ``stack_env`` to ``path`` for the commands run beside the stack."""
    values = stack_env(settings)
    write_env_file(path, values)
    return values


def withdraw_stack_env(values: dict[str, str], path: Path = ENV_FILE) -> None:
    """Remove ``path`` if it still holds ``values`` (a newer `hooklane up` may own it)."""
    if read_env_file(path) == values:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def restart_pause(restarts: int, ran_for: float) -> tuple[int, float]:
    """The restart count after a child that ran ``ran_for`` s died, and the pause before
    restarting it: doubling from 1 s up to MAX_RESTART_PAUSE_S, from 1 s again once it
    had run healthily for HEALTHY_AFTER_S."""
    restarts = 1 if ran_for >= HEALTHY_AFTER_S else restarts + 1
    return restarts, min(MAX_RESTART_PAUSE_S, 0.5 * 2 ** min(restarts, 6))


async def wait_healthy(url: str, within_s: float = 30.0) -> bool:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return True
            await asyncio.sleep(0.2)
    return False


class Supervisor:
    """Runs the child processes and restarts the ones that die."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children = [
            Child(module) for module in CHILD_MODULES if importlib.util.find_spec(module)
        ]
        self.stopping = asyncio.Event()

    async def spawn(self, child: Child) -> None:
        port = int(self.env["HOOKLANE_METRICS_PORT"]) + METRICS_PORT_OFFSETS[child.module]
        env = {**self.env, "HOOKLANE_METRICS_PORT": str(port)}
        # Forked by the event loop's thread, the main one: the parent-death signal
        # follows the forking thread, and this one lives as long as the supervisor.
        child.process = await asyncio.create_subprocess_exec(
            *die_with_parent([sys.executable, "-m", child.module]),
            env=env,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        log.info("child.started", module=child.module, pid=child.process.pid)

    async def watch(self, child: Child) -> None:
        """Restart ``child`` whenever it exits, with a pause (see ``restart_pause``)."""
        while not self.stopping.is_set():
            await self.spawn(child)
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            ran_for = time.monotonic() - child.started_at
            child.restarts, pause = restart_pause(child.restarts, ran_for)
            log.error("child.exited", module=child.module, code=code, restart_in=pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), pause)

    async def stop(self) -> None:
        """SIGTERM every child, then SIGKILL those still running after the grace."""
        self.stopping.set()
        running = [c.process for c in self.children if c.process and c.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(p.wait() for p in running)), timeout=STOP_GRACE_S
            )
        except TimeoutError:
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await asyncio.gather(*(p.wait() for p in running))


def embedded_kind(
    wanted: str, explicit: bool, probe: Callable[[], object] = ensure_kafka
) -> tuple[str, str]:
    """The embedded broker ``hooklane up`` starts, and why not Apache Kafka when it
    falls back to tansu (else "").

    Apache Kafka is the default: tansu keeps every record in memory and, once a
    partition holds tens of thousands of them, answers no fetch within a short wait (a
    soak at 200 events/s stalled after 4.5 minutes). Where Java 17+ or Maven cannot run
    it (``probe`` resolves the pinned release) and ``HOOKLANE_EMBEDDED_BROKER`` was not
    set (``explicit``), tansu starts instead; asked for by name, either is started as is.
    """
    if wanted != "kafka" or explicit:
        return wanted, ""
    try:
        probe()
    except BrokerError as exc:
        return "tansu", str(exc)
    return "kafka", ""


async def run_stack(settings: Settings, explicit_db_url: bool) -> int:
    """The body of ``hooklane up``."""
    broker: LaunchedBroker | None = None
    if settings.kafka_bootstrap_servers is None:
        kind, why = embedded_kind(
            settings.embedded_broker, bool(os.environ.get(PREFIX + "EMBEDDED_BROKER"))
        )
        if why:
            print(
                f"hooklane up: Apache Kafka cannot run here ({why});"
                " starting the embedded tansu instead.",
                file=sys.stderr,
                flush=True,
            )
        broker = ApacheKafkaBroker() if kind == "kafka" else EmbeddedBroker()
        broker.start()
        # One node: a topic cannot have more replicas than that.
        settings = embedded_settings(
            settings.replace(
                kafka_bootstrap_servers=broker.bootstrap_servers, kafka_replication_factor=1
            ),
            os.environ,
            kind,
        )
        log.info(
            "broker.embedded", kind=kind, bootstrap_servers=broker.bootstrap_servers, pid=broker.pid
        )
    if not settings.secret_key:
        settings = settings.replace(secret_key=dev_key(DEV_KEY_FILE))
        log.info("secret_key.development", file=str(DEV_KEY_FILE))
    postgres = EmbeddedPostgres()
    supervisor: Supervisor | None = None
    published: dict[str, str] | None = None
    try:
        settings = await prepare_database(settings, explicit_db_url, postgres)
        await create_kafka_topics(settings)
        api_key = await dev_api_key(settings)
        supervisor = Supervisor(child_env(settings))
        watchers = [asyncio.create_task(supervisor.watch(c)) for c in supervisor.children]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, supervisor.stopping.set)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        embedded_note = f"  (embedded, data in {postgres.pgdata})" if postgres.running else ""
        if await wait_healthy(api_url + "/healthz"):
            published = publish_stack_env(settings)
            print(
                f"\nHooklane is up.\n  API:          {api_url}\n"
                f"  Dev tenant:   {DEV_TENANT}\n"
                f"  Dev API key:  {api_key}\n"
                f"  Kafka:        {settings.kafka_bootstrap_servers}\n"
                f"  Postgres:     {settings.database_url}{embedded_note}\n"
                + "".join(
                    f"  Metrics ({child.module.rsplit('.', 1)[-1]}): ".ljust(24)
                    + f"http://{settings.metrics_host}:"
                    + f"{settings.metrics_port + METRICS_PORT_OFFSETS[child.module]}/metrics\n"
                    for child in supervisor.children
                )
                + f"  Addresses in {ENV_FILE}: `hooklane` commands run in this directory"
                " use them\n  (publish, status, topics, tenants, events, portal-link;"
                " the environment wins).\n" + "Press Ctrl-C to stop.\n",
                flush=True,
            )
        else:
            log.error("api.unhealthy", url=api_url + "/healthz")
        await supervisor.stopping.wait()
        log.info("stack.stopping")
        await supervisor.stop()
        await asyncio.gather(*watchers, return_exceptions=True)
        return 0
    finally:
        if published is not None:
            withdraw_stack_env(published)
        if supervisor is not None and not supervisor.stopping.is_set():
            await supervisor.stop()
        # after the children, whose pools hold sessions on it
        postgres.stop()
        if broker is not None:
            broker.stop()
