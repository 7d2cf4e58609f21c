"""The deliverer's cache of ``WebhookTarget``s (URL, decrypted secrets, mode, state).

Loaded on first use with ``dispatcher.store.webhooks.load_target`` and forgotten when
``hooklane_webhooks`` names the webhook (followed by ``WebhookChanges``), so an updated
URL, secret, state or ordering applies to the next attempt. A missing webhook is
cached too (as None) until a notification names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from dispatcher.attempt import WebhookTarget
from dispatcher.secrets import SecretBox
from dispatcher.store.webhooks import load_target

if TYPE_CHECKING:
    from dispatcher.db import Executor

Loader = Callable[[str], Awaitable[WebhookTarget | None]]


class TargetCache:
    """Webhook id -> ``WebhookTarget`` (or None when the webhook does not exist)."""

    def __init__(self, loader: Loader) -> None:
        self._load = loader
        self._cached: dict[str, WebhookTarget | None] = {}
        self._loading: dict[str, asyncio.Future[WebhookTarget | None]] = {}
        # Bumped by every invalidation, so a load that raced one is not cached.
        self._epoch = 0

    @classmethod
    def from_store(cls, executor: Executor, box: SecretBox) -> TargetCache:
        """A cache loading from the ``webhooks`` table."""

        async def loader(webhook_id: str) -> WebhookTarget | None:
            return await load_target(executor, box, webhook_id)

        return cls(loader)

    def peek(self, webhook_id: str) -> WebhookTarget | None:
        """The cached target, without loading."""
        return self._cached.get(webhook_id)

    async def get(self, webhook_id: str) -> WebhookTarget | None:
        """The webhook's target, loading it once however many callers ask together."""
        if webhook_id in self._cached:
            return self._cached[webhook_id]
        loading = self._loading.get(webhook_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[WebhookTarget | None] = asyncio.get_running_loop().create_future()
        self._loading[webhook_id] = future
        epoch = self._epoch
        try:
            target = await self._load(webhook_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: joined callers re-raise it themselves
            raise
        finally:
            self._loading.pop(webhook_id, None)
        if epoch == self._epoch:
            self._cached[webhook_id] = target
        future.set_result(target)
        return target

    def invalidate(self, webhook_id: str) -> None:
        """Forget one webhook (it changed)."""
        self._epoch += 1
        self._cached.pop(webhook_id, None)

    def clear(self) -> None:
        """Forget everything (after a lost listener connection)."""
        self._epoch += 1
        self._cached.clear()
