"""The management API: ``create_app(settings)`` wires routes, middlewares and resources.

Resources live for the app's lifetime (``cleanup_ctx``): the Postgres pool, the
sender the test trigger shares with the deliverer, and the Kafka producer. Each
resource module registers its own routes; ``api.attempts`` (the attempt log) is
registered when present.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from api import api_keys, event_lookup, health, portal, replay, topics, trigger, webhooks
from api import publish as events
from api.app_keys import POOL, PRODUCER, SCHEMAS, SECRET_BOX, SENDER, SETTINGS
from api.auth import auth_middleware
from api.errors import MAX_BODY, error_middleware
from api.request_metrics import metrics_middleware
from api.schemas import Schemas
from dispatcher.delivery.http.factory import make_sender
from dispatcher.delivery.secrets import SecretBox
from dispatcher.kafka.connection import (
    MAX_RETRY_DELAY_S,
    describe_failure,
    wait_until_accepted,
)
from dispatcher.ops.metrics import ApiMetrics, Families, build_registry
from dispatcher.settings import Settings
from dispatcher.store import db

if TYPE_CHECKING:
    from dispatcher.kafka.producer import Producer

# Re-exported for route modules written elsewhere (api.attempts).
__all__ = ["POOL", "PRODUCER", "SECRET_BOX", "SENDER", "SETTINGS", "create_app"]

log = structlog.get_logger(__name__)

ATTEMPTS_MODULE = "api.attempts"
POOL_SIZE = 10
RETRY_FIRST_S = 1.0  # the producer's first retry after a failed start, doubling


async def _database(app: web.Application) -> AsyncIterator[None]:
    pool = await db.create_pool(app[SETTINGS].database_url, min_size=1, max_size=POOL_SIZE)
    app[POOL] = pool
    yield
    await pool.close()


async def _sender(app: web.Application) -> AsyncIterator[None]:
    sender = make_sender(app[SETTINGS])  # needs the running loop
    app[SENDER] = sender
    yield
    await sender.close()


async def _producer(app: web.Application) -> AsyncIterator[None]:
    from dispatcher.kafka.producer import Producer

    settings = app[SETTINGS]
    if not settings.kafka_bootstrap_servers:
        # Webhook management works without Kafka; publishing answers 503.
        log.warning("api.no_broker", hint="set HOOKLANE_KAFKA_BOOTSTRAP_SERVERS to publish")
        yield
        return
    producer = Producer(settings)
    app[PRODUCER] = producer  # publishing answers 503 until it is connected
    stopping = asyncio.Event()
    connecting: asyncio.Task[None] | None = None
    try:
        await producer.start()
    except (KafkaError, OSError):  # OSError: e.g. a client key its password cannot open
        # Refused (credentials, certificates) or away: serve anyway, /readyz saying why,
        # and connect once the broker accepts (one log line per cause; DESIGN §10).
        connecting = asyncio.create_task(_connect_when_accepted(producer, settings, stopping))
    yield
    stopping.set()
    if connecting is not None:
        await connecting
    await producer.stop()


async def _connect_when_accepted(
    producer: Producer, settings: Settings, stopping: asyncio.Event
) -> None:
    """Start ``producer`` once the brokers accept it, retrying with backoff, until
    ``stopping``."""
    delay = RETRY_FIRST_S
    while not stopping.is_set():
        if not await wait_until_accepted(settings, stopping):
            return
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:  # accepted a moment ago, refused again
            log.warning("api.producer_start_failed", error=describe_failure(settings, exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(MAX_RETRY_DELAY_S, delay * 2)
        else:
            log.info("api.producer_connected")
            return


def create_app(settings: Settings, metrics: Families | None = None) -> web.Application:
    """The aiohttp application of the management API.

    ``metrics`` is the registry the process serves on its metrics port; without one
    the app counts into a registry of its own.
    """
    families = metrics or build_registry(("api",), delivery_timeout_s=settings.delivery_timeout_s)
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[metrics_middleware(ApiMetrics(families)), error_middleware, auth_middleware],
    )
    app[SETTINGS] = settings
    app[SECRET_BOX] = SecretBox.from_setting(settings.secret_key)
    app[SCHEMAS] = Schemas()
    app.cleanup_ctx.extend([_database, _sender, _producer])
    for module in (health, webhooks, trigger, topics, events, event_lookup, replay, api_keys):
        module.setup_routes(app)
    if importlib.util.find_spec(ATTEMPTS_MODULE) is not None:
        importlib.import_module(ATTEMPTS_MODULE).setup_routes(app)
    portal.setup_routes(app)  # the tenant portal's pages under /portal/ (api.portal)
    return app
