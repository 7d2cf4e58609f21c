"""Readiness checks: async callables that return when fine and raise when not.

``/readyz`` runs every check of its process (``run_checks``) and answers 503 naming
each failure. Each check bounds its own time: a hung database must not hang probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import asyncpg
import structlog
from aiokafka.admin import AIOKafkaAdminClient

from dispatcher.kafka.connection import client_options, connection_problem
from dispatcher.settings import Settings

log = structlog.get_logger(__name__)

Check = Callable[[], Awaitable[None]]

CHECK_TIMEOUT_S = 2.0
BROKER_CACHE_S = 5.0


class NotReady(Exception):
    """A check failed; the message says what is wrong."""


def postgres_check(pool: asyncpg.Pool[Any], timeout_s: float = CHECK_TIMEOUT_S) -> Check:
    """``SELECT 1`` on ``pool`` within ``timeout_s``."""

    async def check() -> None:
        async with asyncio.timeout(timeout_s):
            await pool.fetchval("SELECT 1")

    return check


class BrokerCheck:
    """A metadata request to the broker, its result cached for ``cache_s`` seconds.

    Probes of every pod arrive every few seconds; caching keeps them from becoming
    broker load. The admin client is recreated after a failure (it may never have
    connected).
    """

    def __init__(
        self,
        settings: Settings,
        timeout_s: float = CHECK_TIMEOUT_S,
        cache_s: float = BROKER_CACHE_S,
    ) -> None:
        self._settings = settings
        self._bootstrap = settings.kafka_bootstrap_servers
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._admin: AIOKafkaAdminClient | None = None
        self._checked_at = -float("inf")
        self._error: str | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        async with self._lock:
            if time.monotonic() - self._checked_at >= self._cache_s:
                self._error = await self._probe()
                self._checked_at = time.monotonic()
        if self._error is not None:
            raise NotReady(self._error)

    async def _probe(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._admin is None:
                    self._admin = AIOKafkaAdminClient(
                        **client_options(self._settings),
                        request_timeout_ms=int(self._timeout_s * 1000),
                    )
                    await self._admin.start()
                await self._admin.describe_cluster()
        except Exception as exc:  # any client error means: not reachable now
            await self.close()
            problem = await connection_problem(self._settings, self._timeout_s)
            if problem is None:
                problem = f"kafka broker {self._bootstrap}: {describe(exc)}"
        else:
            problem = None
        if problem != self._error:
            # One line when the cause appears or changes, one when it is gone: probes
            # come every few seconds and must not flood the log.
            if problem is not None:
                log.error("kafka.unavailable", problem=problem)
            elif self._error is not None:
                log.info("kafka.available", bootstrap_servers=self._bootstrap)
        return problem

    async def close(self) -> None:
        """Disconnect the admin client."""
        admin, self._admin = self._admin, None
        if admin is not None:
            # closing a client that never connected may fail; nothing is left open
            with contextlib.suppress(Exception):
                await admin.close()


def group_member_check(group: str, assignment: Callable[[], Collection[object]]) -> Check:
    """Ready while the process owns partitions of ``group`` (``assignment()`` non-empty)."""

    async def check() -> None:
        if not assignment():
            raise NotReady(f"not a member of consumer group {group} (no partitions assigned)")

    return check


def describe(exc: BaseException) -> str:
    """A one-line reason for ``exc``."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, NotReady):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def run_checks(checks: Mapping[str, Check]) -> dict[str, dict[str, Any]]:
    """Run ``checks`` concurrently: ``{name: {"ok": True}}`` or ``{"ok": False, "error"}``."""

    async def one(check: Check) -> dict[str, Any]:
        try:
            await check()
        except Exception as exc:  # a check's failure is its answer, never a crash
            return {"ok": False, "error": describe(exc)}
        return {"ok": True}

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))
