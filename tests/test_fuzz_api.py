"""Schemathesis fuzzes every operation of ``/openapi.json`` with a valid API key.

Checks: no 5xx, every response's status code and body conform to the document. The
app runs in-process on a loopback port (in a thread, since schemathesis calls it
synchronously) with a recording sender, so a test trigger never leaves the process.
``make test`` runs a short pass; ``make chaos`` a long one (tests/chaos/test_fuzz_long.py).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.app_keys import SENDER
from api.schemas import Schemas
from dispatcher.delivery.http.sender import Response
from dispatcher.kafka.broker import LaunchedBroker
from dispatcher.settings import Settings
from dispatcher.store import db
from dispatcher.store.tenants import create_tenant
from tests.conftest import TEST_SECRET_KEY, on_kafka
from tests.support.pipeline import ensure_mirror_topics

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
SHORT_EXAMPLES = 25


@dataclass
class RecordingSender:
    """Answers 200 to every delivery and remembers the URL: nothing is sent."""

    urls: list[str] = field(default_factory=list)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self.urls.append(url)
        return Response(200, b"ok")

    async def close(self) -> None:
        pass


@dataclass
class LiveApi:
    """The API app served on 127.0.0.1 from an event loop in a background thread."""

    settings: Settings
    url: str = ""
    api_key: str = ""
    sender: RecordingSender = field(default_factory=RecordingSender)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _runner: web.AppRunner | None = None

    def start(self) -> None:
        threading.Thread(target=self._loop.run_forever, name="live-api", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(120)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _start(self) -> None:
        await ensure_mirror_topics(self.settings, await self._catalog())
        app = create_app(self.settings)
        # Swap the real sender for the recording one (same lifetime hook, same key).
        app.cleanup_ctx[:] = [
            self._sender if ctx.__name__ == "_sender" else ctx for ctx in app.cleanup_ctx
        ]
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        pool = await db.create_pool(self.settings.database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                _, self.api_key = await create_tenant(conn, "fuzzer")
        finally:
            await pool.close()

    async def _sender(self, app: web.Application) -> AsyncIterator[None]:
        app[SENDER] = self.sender
        yield

    async def _catalog(self) -> list[str]:
        pool = await db.create_pool(self.settings.database_url, min_size=1, max_size=1)
        try:
            return [row["name"] for row in await pool.fetch("SELECT name FROM topics")]
        finally:
            await pool.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture(scope="module")
def live_api(broker: LaunchedBroker, database_url: str) -> Iterator[LiveApi]:
    api = LiveApi(
        Settings(
            database_url=database_url,
            kafka_bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=f"fz{uuid.uuid4().hex[:8]}.",
            allow_private_targets=True,
            secret_key=TEST_SECRET_KEY,
            topic_partitions=1,
            deliveries_partitions=1,
            log_level="ERROR",
            kafka_idempotence=on_kafka(),
            kafka_replication_factor=1,
        )
    )
    api.start()
    yield api
    api.stop()


# The document ``GET /openapi.json`` serves (the bundle of schemas/), loaded at import so
# that each operation becomes its own test.
schema = schemathesis.openapi.from_dict(orjson.loads(Schemas().openapi_bundle))


def test_served_document_is_the_fuzzed_one(live_api: LiveApi) -> None:
    """The fuzzed document is exactly what the running API serves at /openapi.json."""
    import urllib.request

    with urllib.request.urlopen(f"{live_api.url}/openapi.json", timeout=30) as answer:
        assert orjson.loads(answer.read()) == schema.raw_schema


def call_and_check(case: Any, api: LiveApi) -> None:
    case.call_and_validate(
        base_url=api.url,
        headers={"Authorization": f"Bearer {api.api_key}"},
        checks=CHECKS,
        timeout=30,
    )


@schema.parametrize()
@settings(
    max_examples=SHORT_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_conforms_to_its_document(case: Any, live_api: LiveApi) -> None:
    """Every operation answers without 5xx and as the OpenAPI document says (short run)."""
    call_and_check(case, live_api)
