"""TargetCache: one load per webhook, invalidation by NOTIFY, no stale result after a race."""

from __future__ import annotations

import asyncio

import asyncpg

from dispatcher.attempt import WebhookTarget
from dispatcher.deliverer.targets import TargetCache
from dispatcher.secrets import SecretBox
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.pipeline_helpers import create_webhook


def _target(url: str) -> WebhookTarget:
    return WebhookTarget("w", "t", url, ("secret",))


async def test_concurrent_gets_share_one_load_and_cache_it() -> None:
    """Many callers asking together cause one load; later calls hit the cache."""
    loads = 0

    async def load(_webhook_id: str) -> WebhookTarget | None:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return _target("http://a")

    cache = TargetCache(load)
    results = await asyncio.gather(*(cache.get("w") for _ in range(10)))
    assert {r.url for r in results if r} == {"http://a"}
    await cache.get("w")
    assert loads == 1


async def test_invalidation_during_a_load_is_not_overwritten_by_the_stale_result() -> None:
    """A load that raced an invalidation answers its caller but is not cached."""
    urls = iter(["http://old", "http://new"])
    release = asyncio.Event()

    async def load(_webhook_id: str) -> WebhookTarget | None:
        url = next(urls)
        if url == "http://old":
            await release.wait()
        return _target(url)

    cache = TargetCache(load)
    pending = asyncio.create_task(cache.get("w"))
    await asyncio.sleep(0)
    cache.invalidate("w")
    release.set()
    assert (await pending) is not None
    fresh = await cache.get("w")
    assert fresh is not None and fresh.url == "http://new"


async def test_missing_webhooks_are_cached_as_none_until_invalidated() -> None:
    """A missing webhook costs one load, not one per delivery."""
    loads = 0

    async def load(_webhook_id: str) -> WebhookTarget | None:
        nonlocal loads
        loads += 1
        return None

    cache = TargetCache(load)
    assert await cache.get("w") is None
    assert await cache.get("w") is None
    cache.clear()
    assert await cache.get("w") is None
    assert loads == 2


async def test_store_loader_decrypts_the_secret(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """from_store() loads the webhook row with its secret decrypted."""
    created = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/x", ["T"])
    cache = TargetCache.from_store(pool, SecretBox.from_setting(settings.secret_key))
    target = await cache.get(created.id)
    assert target is not None
    assert target.secrets == (created.secret,)
    assert (target.url, target.tenant_id, target.ordering) == (
        "http://127.0.0.1:9/x",
        tenant.id,
        "ordered",
    )
