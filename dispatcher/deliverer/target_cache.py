"""The deliverer's cache of ``WebhookTarget``s (URL, decrypted secrets, mode, state).

Loaded on first use and forgotten when ``hooklane_webhooks`` names the webhook
(followed by ``WebhookChanges``), so an updated URL, secret, state or ordering applies
to the next attempt. A missing webhook is cached too (as None) until a notification
names it. The periodic resync (``refresh_all``) repairs what a missed notification
left stale without ever emptying the cache: it re-reads the cached webhooks in
batches (one query per ``REFRESH_BATCH``, paced by ``REFRESH_PAUSE_S``), decrypts
only the rows whose version changed, and swaps each entry in place, so lanes keep
reading the old entry until the new one is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.secrets import SecretBox
from dispatcher.store.webhook_targets import VersionedTarget, load_target, load_targets

if TYPE_CHECKING:
    from dispatcher.store.db import Executor

Loader = Callable[[str], Awaitable[WebhookTarget | None]]
# ids, and the versions already held -> the existing webhooks among them (see
# ``dispatcher.store.webhook_targets.load_targets``).
BatchLoader = Callable[[Sequence[str], Mapping[str, str]], Awaitable[dict[str, VersionedTarget]]]
REFRESH_BATCH = 500
# Between batches: a resync runs every 30 s, so spreading it costs nothing, while
# back-to-back batches would take a visible share of the loop from the lanes.
REFRESH_PAUSE_S = 0.05


@dataclass(frozen=True, slots=True, eq=False)
class _Entry:
    # Compared by identity: a refresh only replaces the very entry it read.
    target: WebhookTarget | None  # None: the webhook does not exist
    version: str | None = None  # None: not known yet (loaded by get())


class TargetCache:
    """Webhook id -> ``WebhookTarget`` (or None when the webhook does not exist)."""

    def __init__(
        self,
        loader: Loader,
        batch_loader: BatchLoader | None = None,
        batch_size: int = REFRESH_BATCH,
        batch_pause: float = REFRESH_PAUSE_S,
    ) -> None:
        self._load = loader
        self._load_batch = batch_loader
        self._batch_size = batch_size
        self._batch_pause = batch_pause
        self._cached: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[WebhookTarget | None]] = {}
        # Bumped by every invalidation, so a load that raced one is not cached.
        self._epoch = 0

    @classmethod
    def from_store(cls, executor: Executor, box: SecretBox) -> TargetCache:
        """A cache loading from the ``webhooks`` table."""

        async def loader(webhook_id: str) -> WebhookTarget | None:
            return await load_target(executor, box, webhook_id)

        async def batch_loader(
            webhook_ids: Sequence[str], known: Mapping[str, str]
        ) -> dict[str, VersionedTarget]:
            return await load_targets(executor, box, webhook_ids, known)

        return cls(loader, batch_loader)

    def peek(self, webhook_id: str) -> WebhookTarget | None:
        """The cached target, without loading."""
        entry = self._cached.get(webhook_id)
        return None if entry is None else entry.target

    async def get(self, webhook_id: str) -> WebhookTarget | None:
        """The webhook's target, loading it once however many callers ask together."""
        entry = self._cached.get(webhook_id)
        if entry is not None:
            return entry.target
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
            self._cached[webhook_id] = _Entry(target)
        future.set_result(target)
        return target

    def invalidate(self, webhook_id: str) -> None:
        """Forget one webhook (it changed)."""
        self._epoch += 1
        self._cached.pop(webhook_id, None)

    async def refresh_all(self) -> int:
        """Re-read every cached webhook, in batches; returns how many entries changed.

        Never empties the cache: ``get()`` answers from the current entries while a
        batch loads. An entry invalidated or reloaded meanwhile is newer than the
        batch's answer and is left alone.
        """
        if self._load_batch is None:
            raise RuntimeError("this TargetCache has no batch loader to refresh with")
        changed = 0
        webhook_ids = list(self._cached)
        for start in range(0, len(webhook_ids), self._batch_size):
            if start:
                await asyncio.sleep(self._batch_pause)
            read = {
                webhook_id: entry
                for webhook_id in webhook_ids[start : start + self._batch_size]
                if (entry := self._cached.get(webhook_id)) is not None
            }
            known = {i: entry.version for i, entry in read.items() if entry.version is not None}
            loaded = await self._load_batch(list(read), known)
            for webhook_id, entry in read.items():
                if self._cached.get(webhook_id) is not entry:
                    continue
                now = loaded.get(webhook_id)
                if now is None:
                    if entry.target is None:
                        continue  # still missing
                    fresh = _Entry(None)  # deleted
                elif now.target is None:
                    continue  # unchanged: same version, not decrypted again
                else:
                    fresh = _Entry(now.target, now.version)
                self._cached[webhook_id] = fresh
                # A first refresh only learns the version of what get() loaded.
                changed += fresh.target != entry.target
        return changed
