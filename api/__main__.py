"""``python -m api`` (``hooklane api``): serve the management API until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from api.app import create_app
from api.app_keys import POOL, PRODUCER
from dispatcher.delivery.secrets import SecretBox, SecretKeyError
from dispatcher.kafka.producer import Producer
from dispatcher.logs import configure_logging
from dispatcher.ops.readiness import Check, NotReady
from dispatcher.ops.tracing import configure_tracing
from dispatcher.runtime import event_loop
from dispatcher.runtime.operations import ProcessOps
from dispatcher.settings import Settings, SettingsError
from dispatcher.store import db

# Seconds in-flight requests (a test trigger waits for its receiver) get to finish.
SHUTDOWN_TIMEOUT_S = 15.0


def main() -> int:
    """Migrate, then serve on HOOKLANE_API_HOST:HOOKLANE_API_PORT."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"hooklane api: bad setting: {exc}", file=sys.stderr)
        return 2
    try:  # before anything touches the database: a bad key must not migrate it first
        SecretBox.from_setting(settings.secret_key)
    except SecretKeyError as exc:
        print(f"hooklane api: bad setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    configure_tracing("api", os.environ)
    log = structlog.get_logger("api")
    try:
        event_loop.run(db.migrate(settings.database_url), settings.event_loop)
        ops = ProcessOps(settings, "api")
        app = create_app(settings, ops.families)
        loop = event_loop.new_loop(settings.event_loop)
        event_loop.tune_gc()
    except (SettingsError, db.DatabaseError, ValueError, OSError) as exc:
        print(f"hooklane api: {exc}", file=sys.stderr)
        return 1

    async def serve_ops(app: web.Application) -> AsyncIterator[None]:
        # After the app's own contexts: the readiness check reuses its pool.
        async with ops:
            await ops.add_infrastructure_checks(app[POOL])
            broker, producer = ops.checks.get("kafka"), app.get(PRODUCER)
            if broker is not None and producer is not None:
                ops.checks["kafka"] = publishing_check(broker, producer)
            yield

    app.cleanup_ctx.append(serve_ops)
    log.info("api.listening", url=f"http://{settings.api_host}:{settings.api_port}")
    # run_app turns SIGTERM and SIGINT into a graceful shutdown (cleanup_ctx runs).
    web.run_app(
        app,
        host=settings.api_host,
        port=settings.api_port,
        print=None,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        loop=loop,
    )
    log.info("api.stopped")
    return 0


def publishing_check(broker: Check, producer: Producer) -> Check:
    """The ``kafka`` check of the API: the broker accepts us and the producer that
    ``POST /events`` uses is connected (it connects in the background after a refusal)."""

    async def check() -> None:
        await broker()
        if not producer.started:
            raise NotReady("kafka: the API's producer is not connected yet (retrying)")

    return check


if __name__ == "__main__":
    raise SystemExit(main())
