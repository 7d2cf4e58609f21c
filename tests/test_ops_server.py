"""The ops server: /metrics, /healthz, /readyz with real Postgres and broker checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.kafka.broker import LaunchedBroker, free_port
from dispatcher.ops.metrics import build_registry
from dispatcher.ops.ops_server import OpsServer
from dispatcher.ops.readiness import BrokerCheck, Check, group_member_check, postgres_check
from dispatcher.settings import Settings
from dispatcher.store import db


class TcpProxy:
    """A loopback TCP proxy to ``target``; ``cut()`` drops every connection and stops
    listening (the database is unreachable), ``restore()`` listens again on the port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def serving(
    checks: dict[str, Check],
) -> AsyncIterator[tuple[OpsServer, aiohttp.ClientSession]]:
    families = build_registry(("deliverer",))
    server = OpsServer("127.0.0.1", free_port(), families.registry, checks)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield server, session
    finally:
        await server.close()


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def test_metrics_and_healthz(database_url: str) -> None:
    """/metrics is Prometheus text with build_info; /healthz answers 200."""
    async with serving({}) as (server, session):
        async with session.get(server.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"hooklane_build_info", "hooklane_attempts", "hooklane_lanes"} <= names
        assert await get_json(session, server.url + "/healthz") == (200, {"status": "ok"})


async def test_readyz_follows_the_database_without_restart(
    database_url: str, broker: LaunchedBroker
) -> None:
    """/readyz turns 503 naming postgres when the database goes away, and 200 when back."""
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.restore()
    proxied = urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
    pool = await db.create_pool(proxied, min_size=0, max_size=1)
    broker_check = BrokerCheck(
        Settings(kafka_bootstrap_servers=broker.bootstrap_servers), cache_s=0
    )
    checks: dict[str, Check] = {
        "postgres": postgres_check(pool, timeout_s=1.0),
        "kafka": broker_check,
    }
    try:
        async with serving(checks) as (server, session):
            status, body = await get_json(session, server.url + "/readyz")
            assert (status, body) == (
                200,
                {"checks": {"postgres": {"ok": True}, "kafka": {"ok": True}}},
            )

            await proxy.cut()
            status, body = await get_json(session, server.url + "/readyz")
            assert status == 503
            assert body["checks"]["postgres"]["ok"] is False
            assert body["checks"]["postgres"]["error"]
            assert body["checks"]["kafka"] == {"ok": True}

            await proxy.restore()
            for _ in range(50):  # the pool reconnects on its next use
                status, body = await get_json(session, server.url + "/readyz")
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert (status, body["checks"]["postgres"]) == (200, {"ok": True})
    finally:
        await proxy.cut()
        await pool.close()
        await broker_check.close()


async def test_readyz_names_an_unreachable_broker_and_a_missing_group_membership() -> None:
    """A broker that does not answer and an empty assignment each fail their check."""
    broker_check = BrokerCheck(
        Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"), timeout_s=1.0
    )
    checks: dict[str, Check] = {
        "kafka": broker_check,
        "consumer_group": group_member_check("hooklane-deliverer", set),
    }
    try:
        async with serving(checks) as (server, session):
            status, body = await get_json(session, server.url + "/readyz")
    finally:
        await broker_check.close()
    assert status == 503
    assert body["checks"]["kafka"]["ok"] is False and body["checks"]["kafka"]["error"]
    assert body["checks"]["consumer_group"] == {
        "ok": False,
        "error": "not a member of consumer group hooklane-deliverer (no partitions assigned)",
    }


@pytest.mark.parametrize(("assignment", "ok"), [(set(), False), ({"p0"}, True)])
async def test_group_member_check(assignment: set[str], ok: bool) -> None:
    """Membership means owning at least one partition."""
    check = group_member_check("g", lambda: assignment)
    if ok:
        await check()
    else:
        with pytest.raises(Exception, match="not a member of consumer group g"):
            await check()


async def test_broker_check_caches_its_answer(broker: LaunchedBroker) -> None:
    """Within the cache window a broker failure is not re-probed (probes are not load)."""
    check = BrokerCheck(Settings(kafka_bootstrap_servers=broker.bootstrap_servers), cache_s=3600)
    try:
        await check()
        broker.freeze()
        try:
            await asyncio.wait_for(check(), 1.0)  # cached: no request reaches the broker
        finally:
            broker.thaw()
    finally:
        await check.close()
