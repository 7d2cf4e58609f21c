"""A webhook's own ``headers`` (DESIGN.md §11): checked at the API, sent on every attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from dispatcher.delivery.custom_headers import header_problems
from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store.backlog import backlog_sizes
from tests.conftest import TenantKey
from tests.support.api import TOPIC, Client, api_client, webhook_body
from tests.support.pipeline import (
    ensure_mirror_topics,
    running,
    wait_until,
)
from tests.support.receiver import Received, Receiver

GATEWAY = {"X-Gateway-Key": "gw-123", "X-Tenant": "acme corp/1"}


@pytest.mark.parametrize(
    ("headers", "has_auth", "named"),
    [
        ({"X-Ok": "fine", "Authorization": "Basic abc"}, False, []),
        ({"Content-Type": "text/plain"}, False, ["Content-Type"]),
        ({"WEBHOOK-SIGNATURE": "v1,x"}, False, ["WEBHOOK-SIGNATURE"]),
        ({"commenda-x-secret": "x", "Host": "evil"}, False, ["commenda-x-secret", "Host"]),
        ({"traceparent": "00-x", "X-Fine": "y"}, False, ["traceparent"]),
        ({"Authorization": "Basic abc"}, True, ["Authorization"]),
        ({"Bad Name": "x"}, False, ["Bad Name"]),
        ({"X-Split": "a\r\nInjected: 1"}, False, ["X-Split"]),
        ({"X-Long": "a" * 1025}, False, ["X-Long"]),
        ({"X-Max": "a" * 1024}, False, []),
        ({f"X-{n}": "v" for n in range(21)}, False, [""]),
    ],
)
def test_header_rules(headers: dict[str, str], has_auth: bool, named: list[str]) -> None:
    """Tokens for names, printable values, 20 at most, reserved names refused by name."""
    assert [name for name, _ in header_problems(headers, has_auth=has_auth)] == named


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with api_client(settings) as running:
        yield running


async def test_headers_are_shown_on_read_and_replaced_by_update(client, tenant) -> None:
    """Create shows the headers; GET shows them; an update replaces them; null clears them."""
    created = await client.post(
        "/webhooks",
        json=webhook_body("http://127.0.0.1:9/h", headers=GATEWAY),
        headers=tenant.headers,
    )
    assert created.status == 201
    webhook = await created.json()
    assert webhook["headers"] == GATEWAY
    read = await (await client.get(f"/webhooks/{webhook['id']}", headers=tenant.headers)).json()
    assert read["headers"] == GATEWAY
    path = f"/webhooks/{webhook['id']}"
    updated = await client.post(path, json={"headers": {"X-New": "1"}}, headers=tenant.headers)
    assert (await updated.json())["headers"] == {"X-New": "1"}
    cleared = await client.post(path, json={"headers": None}, headers=tenant.headers)
    assert (await cleared.json())["headers"] == {}


@pytest.mark.parametrize("name", ["Content-Type", "webhook-id", "Commenda-X-Secret", "TRACESTATE"])
async def test_a_reserved_header_is_refused_with_a_422_naming_it(client, tenant, name) -> None:
    """Create and update both refuse a reserved header; the message names it; nothing changes."""
    body = webhook_body("http://127.0.0.1:9/h", headers={name: "x"})
    response = await client.post("/webhooks", json=body, headers=tenant.headers)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "validation_failed"
    assert name in error["message"]
    assert error["details"][0]["path"] == f"/headers/{name}"
    listed = await (await client.get("/webhooks", headers=tenant.headers)).json()
    assert listed["data"] == []

    created = await client.post(
        "/webhooks",
        json=webhook_body("http://127.0.0.1:9/h", headers=GATEWAY),
        headers=tenant.headers,
    )
    webhook_id = (await created.json())["id"]
    refused = await client.post(
        f"/webhooks/{webhook_id}", json={"headers": {name: "x"}}, headers=tenant.headers
    )
    assert refused.status == 422
    assert name in (await refused.json())["error"]["message"]
    kept = await (await client.get(f"/webhooks/{webhook_id}", headers=tenant.headers)).json()
    assert kept["headers"] == GATEWAY


def carries_gateway_headers(request: Received) -> bool:
    return all(request.headers.get(name.lower()) == value for name, value in GATEWAY.items())


async def test_headers_go_out_on_drain_first_attempt_retry_replay_and_test_trigger(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Every path that sends (backlog drain, first attempt, retry, replay, test) adds them."""
    await ensure_mirror_topics(settings, [TOPIC])
    failures = {"left": 0}

    def respond(request: Received) -> int:
        if failures["left"]:
            failures["left"] -= 1
            return 500
        return 200

    async with Receiver(respond=respond) as rx, api_client(settings) as client:
        created = await client.post(
            "/webhooks",
            json=webhook_body(rx.url, headers=GATEWAY, state="PAUSED"),
            headers=tenant.headers,
        )
        webhook: dict[str, Any] = await created.json()
        path = f"/webhooks/{webhook['id']}"
        async with running(settings):
            async with Producer(settings) as producer:
                await producer.publish(TOPIC, {"n": "buffered"}, tenant.id)

                async def buffered() -> bool:
                    return (await backlog_sizes(pool, [webhook["id"]])).get(webhook["id"]) == 1

                await wait_until(buffered, within=60)
                await client.post(path, json={"state": "ENABLED"}, headers=tenant.headers)
                await wait_until(lambda: len(rx.requests) == 1, within=60)  # the drain
                failures["left"] = 1
                await producer.publish(TOPIC, {"n": "live"}, tenant.id)
                await wait_until(lambda: len(rx.requests) == 3, within=60)  # 500, then retry

            successes: list[dict[str, Any]] = []

            async def logged() -> bool:
                response = await client.get(f"{path}/attempts", headers=tenant.headers)
                data = (await response.json())["data"]
                successes[:] = [a for a in data if a["outcome"] == "success"]
                return bool(successes)

            await wait_until(logged, message="a logged success")
            delivered = successes[0]
            replayed = await client.post(
                f"{path}/attempts/{delivered['id']}/retry", headers=tenant.headers
            )
            assert replayed.status == 202
            await wait_until(lambda: len(rx.requests) == 4, within=60)
            tested = await client.post(
                f"/webhooks/test/trigger/{webhook['id']}", headers=tenant.headers
            )
            assert (await tested.json())["delivered"] is True
    assert len(rx.requests) == 5
    assert all(carries_gateway_headers(request) for request in rx.requests)
