"""TargetCache: one load per webhook, invalidation by NOTIFY, batched resync, no stale races."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence

import asyncpg

from dispatcher.deliverer.target_cache import TargetCache
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.secrets import SecretBox
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import update_webhook
from dispatcher.store.webhook_targets import VersionedTarget, load_target, load_targets
from dispatcher.subscription.retry_override import RetryOverride
from tests.conftest import TenantKey
from tests.support.pipeline import create_webhook


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
    cache.invalidate("w")
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


class Gated:
    """The real batch loader, counting calls and optionally held until released."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self.pool, self.box = pool, box
        self.calls: list[list[str]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(
        self, webhook_ids: Sequence[str], known: Mapping[str, str]
    ) -> dict[str, VersionedTarget]:
        self.calls.append(list(webhook_ids))
        loaded = await load_targets(self.pool, self.box, webhook_ids, known)
        self.entered.set()
        await self.release.wait()
        return loaded


def _cache(
    pool: asyncpg.Pool, settings: Settings, batch_size: int = 500
) -> tuple[TargetCache, Gated]:
    box = SecretBox.from_setting(settings.secret_key)
    gated = Gated(pool, box)

    async def loader(webhook_id: str) -> WebhookTarget | None:
        return await load_target(pool, box, webhook_id)

    return TargetCache(loader, gated, batch_size=batch_size), gated


async def test_refresh_all_replaces_changed_rows_and_keeps_the_rest(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A resync swaps in changed and deleted webhooks; unchanged entries stay as they are."""
    hooks = [
        await create_webhook(pool, settings, tenant.id, f"http://127.0.0.1:9/{n}", ["T"])
        for n in range(5)
    ]
    cache, gated = _cache(pool, settings, batch_size=2)
    for hook in hooks:
        await cache.get(hook.id)
    assert await cache.refresh_all() == 0  # learns the versions, nothing changed
    assert len(gated.calls) == 3  # 5 webhooks in batches of 2
    kept = cache.peek(hooks[0].id)
    await pool.execute(
        "UPDATE webhooks SET url = 'http://127.0.0.1:9/new' WHERE id = $1", uuid.UUID(hooks[1].id)
    )
    await pool.execute("DELETE FROM webhooks WHERE id = $1", uuid.UUID(hooks[2].id))
    assert await cache.refresh_all() == 2
    assert cache.peek(hooks[0].id) is kept  # unchanged: not reloaded, not decrypted again
    refreshed = cache.peek(hooks[1].id)
    assert refreshed is not None and refreshed.url == "http://127.0.0.1:9/new"
    assert await cache.get(hooks[2].id) is None


async def test_refresh_all_serves_the_old_entry_until_the_new_one_is_loaded(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """While a resync batch loads, get() answers from the cache at once (no reload, no gap)."""
    hook = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/old", ["T"])
    missing = str(uuid.uuid4())
    cache, gated = _cache(pool, settings)
    await cache.get(hook.id)
    assert await cache.get(missing) is None
    await pool.execute(
        "UPDATE webhooks SET url = 'http://127.0.0.1:9/new' WHERE id = $1", uuid.UUID(hook.id)
    )
    gated.release.clear()
    refresh = asyncio.create_task(cache.refresh_all())
    await gated.entered.wait()
    during = await cache.get(hook.id)
    assert during is not None and during.url == "http://127.0.0.1:9/old"
    assert await cache.get(missing) is None
    gated.release.set()
    assert await refresh == 1
    after = await cache.get(hook.id)
    assert after is not None and after.url == "http://127.0.0.1:9/new"


async def test_an_invalidation_during_refresh_wins_over_the_batch(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A webhook invalidated (and reloaded) while its batch loads keeps the newer answer."""
    hook = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/a", ["T"])
    cache, gated = _cache(pool, settings)
    await cache.get(hook.id)
    await pool.execute(
        "UPDATE webhooks SET url = 'http://127.0.0.1:9/b' WHERE id = $1", uuid.UUID(hook.id)
    )
    gated.release.clear()
    refresh = asyncio.create_task(cache.refresh_all())
    await gated.entered.wait()  # the batch has read url b
    await pool.execute(
        "UPDATE webhooks SET url = 'http://127.0.0.1:9/c' WHERE id = $1", uuid.UUID(hook.id)
    )
    cache.invalidate(hook.id)
    reloaded = await cache.get(hook.id)
    assert reloaded is not None and reloaded.url == "http://127.0.0.1:9/c"
    gated.release.set()
    assert await refresh == 0
    assert cache.peek(hook.id) is reloaded


async def test_load_targets_skips_decrypting_known_versions(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A known version comes back without a target; a rotated secret changes the version."""
    hook = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/x", ["T"])
    box = SecretBox.from_setting(settings.secret_key)
    first = await load_targets(pool, box, [hook.id, "not-a-uuid", str(uuid.uuid4())])
    assert list(first) == [hook.id]
    assert first[hook.id].target is not None
    same = await load_targets(pool, box, [hook.id], {hook.id: first[hook.id].version})
    assert same[hook.id] == VersionedTarget(first[hook.id].version, None)
    await update_webhook(pool, box, tenant.id, hook.id, {"secret": "whsec_bmV3"})
    rotated = await load_targets(pool, box, [hook.id], {hook.id: first[hook.id].version})
    target = rotated[hook.id].target
    assert target is not None and target.secrets == ("whsec_bmV3", hook.secret)


async def test_targets_carry_the_parsed_rate_limit_and_retry_override(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Both loaders turn ``rate_limit`` into a per-second rate and ``retry`` into an override."""
    box = SecretBox.from_setting(settings.secret_key)
    limited = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/a", ["T"])
    plain = await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/b", ["T"])
    changes = {"rate_limit": {"per_minute": 30}, "retry": {"schedule": "1s,5s", "window": "1h"}}
    await update_webhook(pool, box, tenant.id, limited.id, changes)
    expected = {
        limited.id: (0.5, RetryOverride((1.0, 5.0), 3600.0)),
        plain.id: (None, RetryOverride()),
    }
    batch = await load_targets(pool, box, [limited.id, plain.id])
    for webhook_id, wanted in expected.items():
        one = await load_target(pool, box, webhook_id)
        many = batch[webhook_id].target
        assert one is not None and many is not None
        assert (one.rate_limit, one.retry) == (many.rate_limit, many.retry) == wanted
