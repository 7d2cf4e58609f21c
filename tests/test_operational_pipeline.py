"""Operational webhooks end to end: the deliverer announces, the router routes, receivers verify.

Real broker, Postgres, router and deliverer (with its backlog scheduler); receivers on
loopback fail on purpose. A short schedule (park after 1 s, long retries every second)
keeps each scenario within seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from dispatcher.kafka.producer import Producer
from dispatcher.messages import operational
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.failure import clean_backlog
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    short_retries,
    wait_until,
)
from tests.support.receiver import Received, Receiver

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)

TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"
COMMENDA_SHAPE = {"id", "topic", "triggered_at", "webhook_id", "data", "api_version"}


@pytest.fixture
def short(settings: Settings) -> Settings:
    return short_retries(settings, retry_window=120.0)


@asynccontextmanager
async def pipeline(settings: Settings) -> AsyncIterator[None]:
    """Router and deliverer running in-process, every topic of the test created up front."""
    await ensure_mirror_topics(settings, [TOPIC, *sorted(operational.TOPICS)])
    async with running(settings):
        yield


def _about(requests: list[Received], topic: str, webhook_id: str) -> list[Received]:
    return [
        r
        for r in requests
        if r.json()["topic"] == topic and r.json()["data"]["webhook_id"] == webhook_id
    ]


def _commenda_signature(secret: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return hmac.new(key, body, hashlib.sha256).hexdigest()


async def test_a_410_announces_disabled_to_the_tenants_subscribed_webhook(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """A 410 makes a signed, Commenda-shaped WEBHOOK.DISABLED reach the tenant's other webhook."""
    async with Receiver(respond=lambda r: 410 if r.path == "/gone" else 200) as rx:
        gone = await create_webhook(pool, settings, tenant.id, rx.url_for("gone"), [TOPIC])
        watcher = await create_webhook(
            pool, settings, tenant.id, rx.url_for("watcher"), [operational.WEBHOOK_DISABLED]
        )
        stranger = await create_webhook(
            pool, settings, other_tenant.id, rx.url_for("stranger"), [operational.WEBHOOK_DISABLED]
        )
        async with pipeline(settings):
            async with Producer(settings) as producer:
                await producer.publish(TOPIC, {"n": 1}, tenant.id)
            await wait_until(
                lambda: bool(rx.on("watcher")), within=60, message="DISABLED at watcher"
            )
            state = await pool.fetchval("SELECT state FROM webhooks WHERE id = $1::uuid", gone.id)

    assert state == "DISABLED"
    (request,) = rx.on("watcher")
    body = request.json()
    assert set(body) == COMMENDA_SHAPE
    assert body["topic"] == operational.WEBHOOK_DISABLED
    assert body["webhook_id"] == watcher.id  # the receiving webhook, as for any event
    assert body["data"]["webhook_id"] == gone.id
    assert "410" in body["data"]["reason"]
    StandardWebhook(watcher.secret).verify(request.body, request.headers)  # raises if bad
    assert request.headers["commenda-x-secret"] == _commenda_signature(watcher.secret, request.body)
    assert request.headers["webhook-id"] == body["id"]
    # Another tenant's webhook subscribed to the same topic hears nothing of it.
    assert rx.on("stranger") == [] and stranger.id != watcher.id


async def test_a_failing_endpoint_is_parked_once_and_recovered_once(
    short: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Failing for a while: one PARKED, then on recovery one RECOVERED; never about itself."""
    failing = True

    def respond(request: Received) -> int:
        return 503 if failing and request.path == "/flaky" else 200

    watched = [operational.WEBHOOK_PARKED, operational.WEBHOOK_RECOVERED]
    async with Receiver(respond=respond) as rx:
        # The flaky webhook subscribes to announcements too: it must never get its own.
        flaky = await create_webhook(pool, short, tenant.id, rx.url_for("flaky"), [TOPIC, *watched])
        await create_webhook(pool, short, tenant.id, rx.url_for("watcher"), watched)
        async with pipeline(short), Producer(short) as producer:
            sent = [await producer.publish(TOPIC, {"n": n}, tenant.id) for n in range(5)]
            await wait_until(
                lambda: bool(_about(rx.on("watcher"), operational.WEBHOOK_PARKED, flaky.id)),
                within=60,
                message="PARKED at watcher",
            )
            # More deliveries while parked append to the backlog: no second PARKED.
            sent += [await producer.publish(TOPIC, {"n": n}, tenant.id) for n in range(5, 60)]
            await wait_until(
                lambda: _backlog(pool, flaky.id, len(sent)), within=60, message="all parked"
            )
            failing = False
            await wait_until(
                lambda: bool(_about(rx.on("watcher"), operational.WEBHOOK_RECOVERED, flaky.id)),
                within=60,
                message="RECOVERED at watcher",
            )
            await wait_until(
                lambda: set(sent) <= {r.event_id for r in rx.on("flaky")},
                within=60,
                message="the backlog drained",
            )

    parked = _about(rx.on("watcher"), operational.WEBHOOK_PARKED, flaky.id)
    recovered = _about(rx.on("watcher"), operational.WEBHOOK_RECOVERED, flaky.id)
    assert len(parked) == 1 and len(recovered) == 1
    assert parked[0].json()["data"]["failing_since"] == recovered[0].json()["data"]["failing_since"]
    assert parked[0].json()["data"]["backlog"] >= 1
    assert parked[0].json()["data"]["last_error"] == "HTTP 503"
    assert recovered[0].json()["data"]["backlog"] == len(sent)
    # The flaky webhook got its events, and nothing about itself.
    assert {r.json()["topic"] for r in rx.on("flaky")} == {TOPIC}


async def _backlog(pool: asyncpg.Pool, webhook_id: str, at_least: int) -> Any:
    # Delivered or waiting: every event published so far went through the parked backlog.
    waiting = await pool.fetchval(
        "SELECT count(*) FROM backlog WHERE webhook_id = $1::uuid", webhook_id
    )
    return waiting >= at_least
