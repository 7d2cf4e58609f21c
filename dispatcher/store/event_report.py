"""What happened to one event (``GET /events/:id``, ``hooklane events show``).

No SQL here: each table's module answers for its rows. The answer is put together from
what the pipeline already records: the ``events`` row
(routed, or dead-lettered with its reason), the attempt log, the parked backlog and
the given-up deliveries, and for webhooks that never saw it, whether their filter
turns it away (``routes_to``, evaluated with the webhook's current filter) — the
router records no row for a filtered delivery. Webhooks created after the event was
routed, and disabled webhooks that never attempted it, are not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from dispatcher.messages.wire import Event
from dispatcher.store import attempt_store, backlog, events, failed_deliveries, webhook_store
from dispatcher.store.attempt_store import AttemptSummary

if TYPE_CHECKING:
    from dispatcher.store.db import Executor

DeliveryStatus = Literal["delivered", "pending", "parked", "failed", "filtered"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook's side of an event."""

    webhook_id: str
    status: DeliveryStatus
    attempts: int = 0
    last_status_code: int | None = None
    last_attempt_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's delivery object."""
        return {
            "webhook_id": self.webhook_id,
            "status": self.status,
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_attempt_at": self.last_attempt_at.isoformat() if self.last_attempt_at else None,
        }


@dataclass(frozen=True, slots=True)
class EventReport:
    """An event, its state and its deliveries per webhook."""

    event: Event
    state: Literal["routed", "dead_lettered"]
    reason: str | None
    deliveries: tuple[Delivery, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``GET /events/:id`` body."""
        body: dict[str, Any] = {
            "id": self.event.id,
            "topic": self.event.topic,
            "triggered_at": self.event.triggered_at,
            "state": self.state,
        }
        if self.reason is not None:
            body["reason"] = self.reason
        body["deliveries"] = [delivery.to_json() for delivery in self.deliveries]
        return body


def delivery_status(
    summary: AttemptSummary | None, parked: bool, failed: bool, routes: bool
) -> DeliveryStatus:
    """One webhook's status from what is recorded about it (pure; see the table test)."""
    if failed:
        return "failed"
    if summary is not None and summary.last_outcome == "success":
        return "delivered"
    if parked:
        return "parked"
    if summary is None and not routes:
        return "filtered"
    return "pending"


async def event_report(
    executor: Executor,
    tenant_id: str,
    event_id: str,
    routes_to: Callable[[str, Any, Event], bool],
) -> EventReport | None:
    """The report on ``event_id`` of ``tenant_id``; None when unknown (or another's).

    ``routes_to(webhook_id, stored_filter, event)`` says whether routing sends the
    event to a webhook with that filter (the router's rule, passed in: the store does
    not import the router).
    """
    stored = await events.stored_event(executor, tenant_id, event_id)
    if stored is None:
        return None
    event = stored.event
    if stored.dead_letter_reason is not None:
        return EventReport(event, "dead_lettered", stored.dead_letter_reason, ())
    summaries = await attempt_store.event_attempts(executor, tenant_id, event_id)
    parked = await backlog.webhooks_holding(executor, tenant_id, event_id)
    failed = await failed_deliveries.webhooks_holding(executor, tenant_id, event_id)
    filters = await webhook_store.subscriber_filters(
        executor, tenant_id, event.topic, stored.routed_at
    )
    webhook_ids = sorted(set(filters) | set(summaries) | parked | failed)
    deliveries = tuple(
        _delivery(webhook_id, summaries.get(webhook_id), parked, failed, filters, event, routes_to)
        for webhook_id in webhook_ids
    )
    # A POST /events claim no router has read yet is on its way: routed, all pending.
    return EventReport(event, "routed", None, deliveries)


def _delivery(
    webhook_id: str,
    summary: AttemptSummary | None,
    parked: set[str],
    failed: set[str],
    filters: Mapping[str, Any],
    event: Event,
    routes_to: Callable[[str, Any, Event], bool],
) -> Delivery:
    routes = webhook_id not in filters or routes_to(webhook_id, filters[webhook_id], event)
    status = delivery_status(summary, webhook_id in parked, webhook_id in failed, routes)
    if summary is None:
        return Delivery(webhook_id, status)
    return Delivery(
        webhook_id, status, summary.attempts, summary.last_status_code, summary.last_attempt_at
    )
