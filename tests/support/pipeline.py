"""Reusable helpers for tests that run the pipeline against the real broker and Postgres.

- Receivers: ``tests.support.receiver``.
- ``start_router(settings)`` / ``start_deliverer(settings)``: run a ``Router`` /
  ``Deliverer`` in-process as a task; ``await running.stop()`` shuts it down gracefully,
  ``await running.kill()`` cancels it without committing (an abrupt stop in-process).
  ``async with running(settings):`` runs both for a block; ``short_retries(settings)``
  retries and parks within seconds.
  Each in-process service gets a unique consumer group per test unless one is given.
- ``spawn_deliverer(settings)``: ``python -m dispatcher.deliverer`` as a subprocess, for
  SIGKILL tests; ``settings_env(settings)`` is the environment that reproduces settings.
  ``Spawned.logs`` holds the process's JSON log events, ``Spawned.partitions`` the
  deliveries partitions it owns according to them.
- ``create_webhook(pool, settings, tenant_id, url, topics)``: insert a webhook row
  (secret encrypted as the API does), returning its id and plaintext secret.
- ``wait_until(predicate)``: poll a condition (sync or async; returns its truthy
  value) with a generous deadline (never sleep and
  assert timing: tansu rebalances take seconds); ``wait_for_every_event(rx, paths,
  events)`` waits until each path of a receiver got every event.
- ``ensure_mirror_topics(settings, topics)``: create mirror topics (and the internal
  ones) up front, as ``hooklane migrate`` does. ``start_router``, ``start_deliverer``
  and ``spawn`` create the internal topics first (the services only check them).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import inspect
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dispatcher.deliverer import Deliverer
from dispatcher.delivery.secrets import SecretBox, generate_secret
from dispatcher.kafka.connection import connection_env
from dispatcher.kafka.topic_admin import create_topics
from dispatcher.router.router import Router
from dispatcher.runtime.supervisor import create_kafka_topics
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import create_webhook as store_create_webhook
from tests.support.receiver import Receiver

DEFAULT_WAIT_S = 30.0


# -- waiting -------------------------------------------------------------------------


async def wait_until(
    predicate: Callable[[], Any],
    within: float = DEFAULT_WAIT_S,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it gives something truthy, and return that;
    AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {message}")
        await asyncio.sleep(interval)


def busiest_second(timestamps: list[float]) -> int:
    """The most requests in any window [t, t + 1 s) that starts at a request."""
    ordered = sorted(timestamps)
    return max(
        bisect.bisect_left(ordered, start + 1.0) - index for index, start in enumerate(ordered)
    )


async def wait_for_every_event(
    rx: Receiver, paths: Sequence[str], events: Sequence[str], within: float = 90.0
) -> None:
    """Wait until every one of ``events`` arrived on each of ``paths`` of ``rx``."""
    wanted = set(events)
    for path in paths:
        await wait_until(
            lambda p=path: set(rx.event_ids(p)) >= wanted,  # type: ignore[misc]
            within=within,
            message=f"every event on /{path}",
        )


# -- services in-process ---------------------------------------------------------------


@dataclass
class Running:
    """A router or deliverer running as a task of the test's event loop."""

    service: Router | Deliverer
    task: asyncio.Task[None]

    async def stop(self, within: float = 30.0) -> None:
        """Graceful stop: finish in-flight, commit, leave the group."""
        self.service.stop()
        await asyncio.wait_for(asyncio.shield(self.task), within)

    async def kill(self) -> None:
        """Abrupt stop: cancel the task; nothing more is committed, in-flight work is lost.

        The consumer's sockets are closed by the cancellation's cleanup (so the group
        rebalances at once), but no graceful release or final commit runs. For a true
        kill -9 use ``spawn_deliverer``.
        """
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    @property
    def assignment(self) -> set[Any]:
        """The partitions the service's consumer owns now."""
        return self.service.assignment

    async def wait_assigned(self, within: float = DEFAULT_WAIT_S) -> None:
        """Wait until the group gave this service at least one partition."""
        await wait_until(lambda: bool(self.assignment), within, message="partition assignment")


def _unique_group(kind: str) -> str:
    return f"hooklane-{kind}-{uuid.uuid4().hex[:8]}"


async def start_router(
    settings: Settings, group_id: str | None = None, wait_assigned: bool = True, **kwargs: Any
) -> Running:
    """Start a ``Router`` as a task (its own consumer group unless ``group_id``)."""
    return await _start(Router, "router", settings, group_id, wait_assigned, **kwargs)


async def start_deliverer(
    settings: Settings, group_id: str | None = None, wait_assigned: bool = True, **kwargs: Any
) -> Running:
    """Start a ``Deliverer`` as a task (its own consumer group unless ``group_id``)."""
    return await _start(Deliverer, "deliverer", settings, group_id, wait_assigned, **kwargs)


async def _start(
    kind: type[Router] | type[Deliverer],
    name: str,
    settings: Settings,
    group_id: str | None,
    wait_assigned: bool,
    **kwargs: Any,
) -> Running:
    await create_kafka_topics(settings)  # as `hooklane migrate`: internal + catalog mirrors
    service = kind(settings, group_id=group_id or _unique_group(name), **kwargs)
    await service.start()
    running = Running(service, asyncio.create_task(service.run(), name=f"test-{name}"))
    if wait_assigned:
        await running.wait_assigned()
    return running


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Running, Running]]:
    """A router and a deliverer in-process for the block; stopped gracefully after it."""
    router = await start_router(settings)
    try:
        deliverer = await start_deliverer(settings)
        try:
            yield router, deliverer
        finally:
            await deliverer.stop()
    finally:
        await router.stop()


def short_retries(settings: Settings, retry_window: float = 30.0) -> Settings:
    """Retries within seconds and parking after one: a failure's whole path in seconds."""
    return settings.replace(
        retry_schedule=(0.05, 0.1, 0.2, 0.5, 1.0, 1.0), park_after=1.0, retry_window=retry_window
    )


# -- services as subprocesses ----------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make ``Settings.from_env()`` equal ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLANE_")}
    values: dict[str, Any] = {
        "DATABASE_URL": settings.database_url,
        "TOPIC_PREFIX": settings.topic_prefix,
        "DELIVERY_TIMEOUT_S": f"{settings.delivery_timeout_s}s",
        "RETRY_SCHEDULE": ",".join(f"{d}s" for d in settings.retry_schedule),
        "PARK_AFTER": f"{settings.park_after}s",
        "RETRY_WINDOW": f"{settings.retry_window}s",
        "AUTO_DISABLE_AFTER": f"{settings.auto_disable_after}s",
        "RETRY_AFTER_MAX": f"{settings.retry_after_max}s",
        "MAX_IN_FLIGHT": settings.max_in_flight,
        "MAX_IN_FLIGHT_PER_WEBHOOK": settings.max_in_flight_per_webhook,
        "SECRET_KEY": settings.secret_key or "",
        "ALLOW_PRIVATE_TARGETS": "true" if settings.allow_private_targets else "false",
        "DELIVERIES_PARTITIONS": settings.deliveries_partitions,
        "TOPIC_PARTITIONS": settings.topic_partitions,
        "FETCH_MAX_WAIT_MS": settings.fetch_max_wait_ms,
        "KAFKA_IDEMPOTENCE": "true" if settings.kafka_idempotence else "false",
        "KAFKA_COMPRESSION": settings.kafka_compression,
        "INSTANCE_ID": settings.instance_id or "",
        "DEAD_LETTER_RETENTION": f"{settings.dead_letter_retention}s",
        "KAFKA_REPLICATION_FACTOR": settings.kafka_replication_factor or "",
        "LOG_LEVEL": settings.log_level,
        "LOG_FORMAT": "json",
        "DEDUP_WINDOW": f"{settings.dedup_window}s",
        "VALIDATE_EVENTS": "true" if settings.validate_events else "false",
        "METRICS_HOST": settings.metrics_host,
        "METRICS_PORT": settings.metrics_port,
        "METRICS_WEBHOOK_LABELS": "true" if settings.metrics_webhook_labels else "false",
    }
    env.update({f"HOOKLANE_{k}": str(v) for k, v in values.items()})
    env.update(connection_env(settings))
    return env


@dataclass
class Spawned:
    """A service subprocess (``python -m <module>``) and the log events it wrote."""

    process: asyncio.subprocess.Process
    logs: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def _read_logs(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self.logs.append(event)

    @property
    def partitions(self) -> set[int]:
        """The deliveries partitions owned now, as its assignment logs tell."""
        owned: set[int] = set()
        for event in self.logs:
            if event.get("event") == "deliverer.partitions_assigned":
                owned = set(event["partitions"])
            elif event.get("event") == "deliverer.partitions_released":
                owned -= set(event["partitions"])
        return owned

    def kill(self) -> None:
        """SIGKILL: no cleanup, no commit."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.kill()
            return await self.process.wait()


async def spawn(module: str, settings: Settings, *, capture_logs: bool = False) -> Spawned:
    """Run ``python -m module`` with ``settings`` in its environment.

    With ``capture_logs`` its stderr (JSON log lines) is read into ``Spawned.logs``.
    """
    await create_kafka_topics(settings)  # as `hooklane migrate`: internal + catalog mirrors
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=settings_env(settings),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if capture_logs else asyncio.subprocess.DEVNULL,
    )
    spawned = Spawned(process)
    if capture_logs:
        spawned._reader = asyncio.create_task(spawned._read_logs())
    return spawned


async def spawn_deliverer(settings: Settings, *, capture_logs: bool = False) -> Spawned:
    """``python -m dispatcher.deliverer`` (consumer group ``hooklane-deliverer``)."""
    return await spawn("dispatcher.deliverer", settings, capture_logs=capture_logs)


# -- data ------------------------------------------------------------------------------


async def ensure_mirror_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Create the mirror topics of ``topics`` (and the internal ones) now."""
    await create_topics(settings, topics)


@dataclass(frozen=True)
class CreatedWebhook:
    """A webhook inserted by ``create_webhook``, with its plaintext secret."""

    id: str
    secret: str


async def create_webhook(
    pool: asyncpg.Pool,
    settings: Settings,
    tenant_id: str,
    url: str,
    topics: Sequence[str],
    *,
    secret: str | None = None,
    state: str = "ENABLED",
    ordering: str = "ordered",
    max_in_flight: int = 1,
) -> CreatedWebhook:
    """Insert a webhook the way the API does (secret encrypted with the settings' key)."""
    secret = secret or generate_secret()
    webhook = await store_create_webhook(
        pool,
        SecretBox.from_setting(settings.secret_key),
        tenant_id=tenant_id,
        url=url,
        topics=list(topics),
        secret=secret,
        state=state,
        ordering=ordering,
        max_in_flight=max_in_flight,
    )
    return CreatedWebhook(webhook.id, secret)


async def set_state(pool: asyncpg.Pool, webhook_id: str, state: str) -> None:
    """Enable or disable a webhook directly in the table (what the API's update does)."""
    await pool.execute(
        "UPDATE webhooks SET state = $2, updated_at = now() WHERE id = $1::uuid", webhook_id, state
    )
