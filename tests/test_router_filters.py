"""Router filtering: compiled filters in the subscription index, live filter updates, PAUSED."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from dispatcher.delivery.secrets import SecretBox, generate_secret
from dispatcher.kafka.producer import Producer
from dispatcher.messages.wire import Event
from dispatcher.router.router import Router
from dispatcher.router.subscription_index import FilterCache, Subscriptions
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import create_webhook as store_create_webhook
from dispatcher.store.webhook_store import update_webhook
from dispatcher.subscription.filters import compile_filter
from tests.conftest import TenantKey
from tests.support.pipeline import ensure_mirror_topics, running, wait_until
from tests.support.receiver import Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"


def _event(data: dict[str, Any], topic: str = "T") -> Event:
    return Event(id="e", topic=topic, tenant_id="t1", triggered_at=1, data=data)


def test_matching_applies_each_webhooks_filter_and_counts_the_skipped() -> None:
    """Unfiltered webhooks get every event; filtered ones only matches; skips are counted."""
    index = Subscriptions()
    index.put("all", "t1", ["T"])
    index.put("big", "t1", ["T"], compile_filter({"data.amount": {"$gt": 10}}))
    assert index.matching(_event({"amount": 50})) == ["all", "big"]
    assert index.matching(_event({"amount": 5})) == ["all"]
    assert index.matching(_event({"amount": 50}, topic="OTHER")) == []
    assert index.filtered == 1
    index.put("big", "t1", ["T"])  # the filter was cleared
    assert index.matching(_event({"amount": 5})) == ["all", "big"]
    index.remove("all")
    assert index.matching(_event({"amount": 5})) == ["big"]


def test_filter_cache_compiles_once_per_webhook_version() -> None:
    """The same version reuses its closure; a new updated_at compiles again."""
    cache = FilterCache()
    row = {"id": "w1", "updated_at": 1, "filter": {"data.x": 1}}
    first = cache.get(row)
    assert first is not None
    assert cache.get(dict(row)) is first
    second = cache.get({**row, "updated_at": 2, "filter": {"data.x": 2}})
    assert second is not None and second is not first
    assert second({"data": {"x": 2}}) and not second({"data": {"x": 1}})
    assert cache.get({"id": "w2", "updated_at": 1, "filter": None}) is None


def test_an_invalid_stored_filter_delivers_everything() -> None:
    """A filter written around the API is not applied (nothing is lost), only logged."""
    assert FilterCache().get({"id": "w1", "updated_at": 1, "filter": {"x": {"$bad": 1}}}) is None


async def _webhook(
    pool: asyncpg.Pool,
    settings: Settings,
    tenant_id: str,
    url: str,
    spec: dict[str, Any] | None = None,
    state: str = "ENABLED",
) -> str:
    created = await store_create_webhook(
        pool,
        SecretBox.from_setting(settings.secret_key),
        tenant_id=tenant_id,
        url=url,
        topics=[TOPIC],
        secret=generate_secret(),
        state=state,
        filter=spec,
    )
    return created.id


def _received(rx: Receiver, name: str, event_id: str) -> Callable[[], bool]:
    return lambda: event_id in rx.event_ids(name)


EVENTS = {
    "e1": {
        "amount": 50,
        "country": "US",
        "tags": ["new"],
        "customer": {"address": {"city": "Austin"}},
    },
    "e2": {
        "amount": 150,
        "country": "CA",
        "tags": ["vip", "new"],
        "lines": [{"sku": "A"}, {"sku": "C"}],
    },
    "e3": {
        "amount": 2000,
        "country": "MX",
        "note": None,
        "customer": {"address": {"city": "Dallas"}},
    },
    "e4": {"amount": 100, "country": "US", "lines": [{"sku": "A"}], "note": "hi"},
    # matches every filter below: once it arrives, everything before it has been routed
    "last": {
        "amount": 500,
        "country": "US",
        "tags": ["vip"],
        "note": "x",
        "customer": {"address": {"city": "Austin"}},
        "lines": [{"sku": "B"}],
    },
}
CASES: dict[str, tuple[dict[str, Any] | None, list[str]]] = {
    "all": (None, ["e1", "e2", "e3", "e4", "last"]),
    "nested": ({"data.customer.address.city": "Austin"}, ["e1", "last"]),
    "nested-object-form": ({"data": {"customer": {"address": {"city": "Austin"}}}}, ["e1", "last"]),
    "array-contains": ({"data.tags": "vip"}, ["e2", "last"]),
    "array-of-objects": ({"data.lines.sku": {"$in": ["B", "C"]}}, ["e2", "last"]),
    "exists": ({"data.note": {"$exists": True}}, ["e3", "e4", "last"]),
    "or": (
        {"$or": [{"data.country": "US"}, {"data.amount": {"$gt": 1000}}]},
        ["e1", "e3", "e4", "last"],
    ),
    "design-example": (
        {"data.amount": {"$gte": 100}, "$or": [{"data.country": "US"}, {"data.country": "CA"}]},
        ["e2", "e4", "last"],
    ),
    "nin": ({"data.country": {"$nin": ["MX"]}}, ["e1", "e2", "e4", "last"]),
}


async def test_filters_deliver_exactly_the_matching_events(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Through the real broker, each webhook receives exactly the events its filter matches."""
    await ensure_mirror_topics(settings, [TOPIC])
    async with Receiver() as rx:
        for name, (spec, _) in CASES.items():
            await _webhook(pool, settings, tenant.id, rx.url_for(name), spec)
        async with running(settings) as (router, _):
            async with Producer(settings) as producer:
                ids = {
                    name: await producer.publish(TOPIC, data, tenant.id)
                    for name, data in EVENTS.items()
                }
            for name in CASES:
                await wait_until(_received(rx, name, ids["last"]), message=name)
    for name, (_, expected) in CASES.items():
        assert rx.event_ids(name) == [ids[event] for event in expected], name
    filtered = sum(len(EVENTS) - len(expected) for _, expected in CASES.values())
    assert isinstance(router.service, Router)
    assert router.service.index.subscriptions.filtered == filtered


async def test_a_filter_update_takes_effect_for_the_next_event_within_a_second(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """After an update, the next event (a second later) is judged by the new filter."""
    await ensure_mirror_topics(settings, [TOPIC])
    box = SecretBox.from_setting(settings.secret_key)
    async with Receiver() as rx:
        webhook_id = await _webhook(pool, settings, tenant.id, rx.url, {"data.n": 1})
        async with running(settings), Producer(settings) as producer:
            first = await producer.publish(TOPIC, {"n": 1}, tenant.id)
            await wait_until(lambda: len(rx.requests) == 1)
            await update_webhook(pool, box, tenant.id, webhook_id, {"filter": {"data.n": 2}})
            await asyncio.sleep(1.0)  # the contract: effective within a second
            await producer.publish(TOPIC, {"n": 1}, tenant.id)
            second = await producer.publish(TOPIC, {"n": 2}, tenant.id)
            await wait_until(lambda: second in rx.event_ids())
    assert rx.event_ids() == [first, second]


@pytest.mark.parametrize(("state", "routed"), [("PAUSED", True), ("DISABLED", False)])
async def test_paused_webhooks_are_routed_and_disabled_ones_are_not(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, state: str, routed: bool
) -> None:
    """The index holds PAUSED webhooks (their deliveries get buffered) but not DISABLED ones."""
    from dispatcher.router.subscription_index import SubscriptionIndex

    webhook_id = await _webhook(pool, settings, tenant.id, "http://127.0.0.1:9/x", state=state)
    index = SubscriptionIndex(settings.database_url)
    await index.start()
    try:
        assert (webhook_id in index.lookup(tenant.id, TOPIC)) is routed
        await pool.execute("UPDATE webhooks SET state = 'ENABLED' WHERE id = $1::uuid", webhook_id)
        await wait_until(lambda: webhook_id in index.lookup(tenant.id, TOPIC), within=15)
        await pool.execute("UPDATE webhooks SET state = $2 WHERE id = $1::uuid", webhook_id, state)
        await wait_until(
            lambda: (webhook_id in index.lookup(tenant.id, TOPIC)) is routed, within=15
        )
    finally:
        await index.stop()
