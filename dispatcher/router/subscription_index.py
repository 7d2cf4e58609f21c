"""Which webhooks of a tenant want an event: an in-memory index.

The router looks up subscribers for every event, so the answer must come from memory,
not from a query per event. Routed are ENABLED and PAUSED webhooks (a PAUSED one's
deliveries are buffered by the deliverer, in order); DISABLED ones get nothing.
A webhook's payload filter (``dispatcher.subscription.filters``) is compiled once per webhook
version (its ``updated_at``) when it is loaded, never per event; ``matching(event)``
applies it. ``SubscriptionIndex`` loads every routed webhook once,
then follows ``WebhookChanges`` (``dispatcher.store.webhook_changes``): the
``hooklane_webhooks`` Postgres channel (a trigger on ``webhooks`` notifies the id of
every inserted, updated or deleted row), heard on the process's one listen connection
(``dispatcher.store.notifications``), reloads just that row, and a periodic full resync
(also after a lost listener connection) repairs anything a missed notification left
stale.

The index also knows the topic catalog (``topic_known``): loaded with every resync,
a topic it has not seen is looked up once (and again after ``UNKNOWN_TOPIC_TTL_S``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from dispatcher.messages.operational import recipients
from dispatcher.messages.wire import Event
from dispatcher.store import topic_store, webhook_store
from dispatcher.store.db import TRANSIENT_ERRORS, create_pool
from dispatcher.store.notifications import Notifications
from dispatcher.store.webhook_changes import RESYNC_INTERVAL_S, WebhookChanges
from dispatcher.store.webhook_store import ROUTED_STATES
from dispatcher.subscription.filters import InvalidFilter, Predicate, compile_filter, event_view

log = structlog.get_logger(__name__)

# An unknown topic is looked up again after this long (it may have just been added).
UNKNOWN_TOPIC_TTL_S = 1.0
MAX_UNKNOWN_TOPICS = 10_000


class Subscriptions:
    """The pure index: ``(tenant_id, topic) -> webhook ids`` (insertion order), and
    each webhook's compiled filter (absent: every event)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], list[str]] = {}
        self._keys_of: dict[str, list[tuple[str, str]]] = {}
        self._filters: dict[str, Predicate] = {}
        # Deliveries not created because a filter did not match (the router adds
        # each batch's increase to ``hooklane_events_filtered_total``).
        self.filtered = 0

    def __len__(self) -> int:
        return len(self._keys_of)

    def lookup(self, tenant_id: str, topic: str) -> Sequence[str]:
        """The routed webhooks of ``tenant_id`` subscribed to ``topic`` (filters aside)."""
        return self._by_key.get((tenant_id, topic), ())

    def matching(self, event: Event) -> list[str]:
        """The routed webhooks subscribed to ``event``'s topic whose filter it matches."""
        subscribers = self.lookup(event.tenant_id, event.topic)
        if not subscribers:
            return []
        view = None
        wanted = []
        for webhook_id in subscribers:
            predicate = self._filters.get(webhook_id)
            if predicate is not None:
                view = view or event_view(event.topic, event.tenant_id, event.data)
                if not predicate(view):
                    self.filtered += 1
                    continue
            wanted.append(webhook_id)
        return wanted

    def replace_all(
        self, webhooks: Iterable[tuple[str, str, Sequence[str], Predicate | None]]
    ) -> None:
        """Rebuild from ``(webhook_id, tenant_id, topics, filter)`` of every routed webhook."""
        self._by_key.clear()
        self._keys_of.clear()
        self._filters.clear()
        for webhook_id, tenant_id, topics, predicate in webhooks:
            self.put(webhook_id, tenant_id, topics, predicate)

    def put(
        self,
        webhook_id: str,
        tenant_id: str,
        topics: Sequence[str],
        predicate: Predicate | None = None,
    ) -> None:
        """Add or replace one routed webhook's subscriptions and compiled filter."""
        self.remove(webhook_id)
        keys = [(tenant_id, topic) for topic in dict.fromkeys(topics)]
        for key in keys:
            self._by_key.setdefault(key, []).append(webhook_id)
        self._keys_of[webhook_id] = keys
        if predicate is not None:
            self._filters[webhook_id] = predicate

    def remove(self, webhook_id: str) -> None:
        """Forget a webhook (deleted or disabled); unknown ids are ignored."""
        self._filters.pop(webhook_id, None)
        for key in self._keys_of.pop(webhook_id, ()):
            subscribers = self._by_key[key]
            subscribers.remove(webhook_id)
            if not subscribers:
                del self._by_key[key]


def filter_of(webhook_id: str, spec: Any) -> Predicate | None:
    """The compiled form of a webhook's stored filter (None: every event).

    An invalid stored filter (only a write around the API can store one) matches
    everything: deliver rather than lose.
    """
    if spec is None:
        return None
    try:
        return compile_filter(spec)
    except InvalidFilter as exc:
        log.warning("subscriptions.invalid_filter", webhook_id=webhook_id, error=str(exc))
        return None


def routes_to(webhook_id: str, predicate: Predicate | None, event: Event) -> bool:
    """Whether routing sends ``event`` (of the webhook's tenant and topic) to the webhook
    whose compiled filter is ``predicate``: the filter matches, and the event is not an
    operational event about that webhook. What a replay re-sends follows this too."""
    view = event_view(event.topic, event.tenant_id, event.data)
    if predicate is not None and not predicate(view):
        return False
    return bool(recipients(event, [webhook_id]))


def routes_to_stored(webhook_id: str, spec: Any, event: Event) -> bool:
    """``routes_to`` for a webhook's stored filter ``spec`` (compiled here, uncached:
    for looking one event up, not for routing)."""
    return routes_to(webhook_id, filter_of(webhook_id, spec), event)


class FilterCache:
    """Compiled filters by webhook version, so a resync recompiles only what changed."""

    def __init__(self) -> None:
        self._compiled: dict[str, tuple[object, Predicate | None]] = {}

    def get(self, row: Mapping[str, Any] | asyncpg.Record) -> Predicate | None:
        """The compiled filter of a webhook row (``id``, ``filter``, ``updated_at``)."""
        webhook_id, version = row["id"], row["updated_at"]
        cached = self._compiled.get(webhook_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        predicate = filter_of(webhook_id, row["filter"])
        self._compiled[webhook_id] = (version, predicate)
        return predicate

    def keep_only(self, webhook_ids: Iterable[str]) -> None:
        """Forget the filters of webhooks that are gone."""
        alive = set(webhook_ids)
        for webhook_id in [key for key in self._compiled if key not in alive]:
            del self._compiled[webhook_id]

    def forget(self, webhook_id: str) -> None:
        """Forget one webhook's filter."""
        self._compiled.pop(webhook_id, None)


class SubscriptionIndex:
    """``Subscriptions`` kept fresh from Postgres (see the module docstring)."""

    def __init__(
        self,
        database_url: str,
        resync_interval: float = RESYNC_INTERVAL_S,
        notifications: Notifications | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subscriptions = Subscriptions()
        self._database_url = database_url
        self._clock = clock  # when unknown topics' answers expire
        self._pool: asyncpg.Pool | None = None
        # The process's listen connection; the index opens its own when given none.
        self._own_notifications = notifications is None
        self._notifications = notifications or Notifications(database_url)
        self._changes = WebhookChanges(
            self._notifications, self._reload, self._resync, resync_interval
        )
        self._known_topics: set[str] = set()
        self._unknown_until: dict[str, float] = {}
        self._filters = FilterCache()

    async def start(self) -> None:
        """Load every routed webhook and start following changes."""
        # jsonb decoded (the filters): dispatcher.store.db's pool.
        self._pool = await create_pool(self._database_url, min_size=1, max_size=2)
        try:
            if self._own_notifications:
                await self._notifications.start()
            await self._changes.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop following changes."""
        await self._changes.stop()
        if self._own_notifications:
            await self._notifications.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def lookup(self, tenant_id: str, topic: str) -> Sequence[str]:
        """The routed webhooks of ``tenant_id`` subscribed to ``topic`` (filters aside)."""
        return self.subscriptions.lookup(tenant_id, topic)

    def matching(self, event: Event) -> list[str]:
        """The routed webhooks that want ``event`` (topic subscribed, filter matched)."""
        return self.subscriptions.matching(event)

    async def topic_known(self, topic: str) -> bool:
        """Whether ``topic`` is in the topic catalog (cached; unknown answers expire fast).

        Postgres being unreachable answers True: routing goes on, and a topic outside
        the catalog has no subscribers anyway (the API only accepts catalog topics).
        """
        if topic in self._known_topics:
            return True
        now = self._clock()
        if self._unknown_until.get(topic, 0.0) > now:
            return False
        if self._pool is None:
            return True
        try:
            found = await topic_store.topic_exists(self._pool, topic)
        except TRANSIENT_ERRORS as exc:
            log.warning("subscriptions.catalog_unavailable", error=str(exc))
            return True
        if found:
            self._known_topics.add(topic)
            self._unknown_until.pop(topic, None)
            return True
        if len(self._unknown_until) > MAX_UNKNOWN_TOPICS:
            self._unknown_until.clear()
        self._unknown_until[topic] = now + UNKNOWN_TOPIC_TTL_S
        return False

    async def _resync(self) -> None:
        assert self._pool is not None
        self._known_topics = await topic_store.topic_names(self._pool)
        rows = await webhook_store.routed_webhooks(self._pool)
        self._filters.keep_only(row["id"] for row in rows)
        self.subscriptions.replace_all(
            (r["id"], r["tenant_id"], r["topics"], self._filters.get(r)) for r in rows
        )
        log.debug("subscriptions.resynced", webhooks=len(self.subscriptions))

    async def _reload(self, webhook_id: str) -> None:
        assert self._pool is not None
        row = await webhook_store.routing_row(self._pool, webhook_id)
        if row is None or row["state"] not in ROUTED_STATES:
            self.subscriptions.remove(webhook_id)
            self._filters.forget(webhook_id)
        else:
            predicate = self._filters.get(row)
            self.subscriptions.put(row["id"], row["tenant_id"], row["topics"], predicate)
        log.debug("subscriptions.reloaded", webhook_id=webhook_id)
