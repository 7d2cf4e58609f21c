"""What happened to one event (``GET /events/:id``, ``hooklane events show``).

The answer is put together from what the pipeline already records: the ``events`` row
(routed, or dead-lettered with its reason), the attempt log, the parked backlog and
the given-up deliveries, and for webhooks that never saw it, whether their filter
turns it away (``routes_to``, evaluated with the webhook's current filter) — the
router records no row for a filtered delivery. Webhooks created after the event was
routed, and disabled webhooks that never attempted it, are not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from dispatcher.messages.wire import Event
from dispatcher.store.events import unpack

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


@dataclass(frozen=True, slots=True)
class AttemptSummary:
    """The non-test attempts of one webhook at one event."""

    attempts: int
    last_outcome: str
    last_status_code: int | None
    last_attempt_at: datetime


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
    row = await executor.fetchrow(
        "SELECT event_id, topic, triggered_at, payload, routed_at, dead_letter_reason"
        " FROM events WHERE tenant_id = $1 AND event_id = $2",
        tenant_id,
        event_id,
    )
    if row is None:
        return None
    event = Event(
        row["event_id"], row["topic"], tenant_id, row["triggered_at"], unpack(row["payload"])
    )
    if row["dead_letter_reason"] is not None:
        return EventReport(event, "dead_lettered", row["dead_letter_reason"], ())
    summaries = await _attempts(executor, tenant_id, event_id)
    parked, failed = await _parked_and_failed(executor, tenant_id, event_id)
    subscribers = await executor.fetch(
        "SELECT id::text AS id, filter FROM webhooks WHERE tenant_id = $1"
        " AND $2 = ANY(topics) AND created_at <= $3 AND state <> 'DISABLED'",
        tenant_id,
        event.topic,
        row["routed_at"],
    )
    filters: dict[str, Any] = {item["id"]: item["filter"] for item in subscribers}
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


async def _attempts(executor: Executor, tenant_id: str, event_id: str) -> dict[str, AttemptSummary]:
    rows: Sequence[Any] = await executor.fetch(
        "SELECT DISTINCT ON (webhook_id) webhook_id::text AS webhook_id,"
        " count(*) OVER (PARTITION BY webhook_id) AS attempts,"
        " outcome, status_code, attempted_at"
        " FROM attempts WHERE event_id = $2 AND tenant_id = $1 AND NOT test"
        " ORDER BY webhook_id, attempted_at DESC, id DESC",
        tenant_id,
        event_id,
    )
    return {
        row["webhook_id"]: AttemptSummary(
            row["attempts"], row["outcome"], row["status_code"], row["attempted_at"]
        )
        for row in rows
    }


async def _parked_and_failed(
    executor: Executor, tenant_id: str, event_id: str
) -> tuple[set[str], set[str]]:
    # Through the tenant's webhooks: both tables are indexed by webhook id first.
    rows = await executor.fetch(
        "WITH mine AS (SELECT id FROM webhooks WHERE tenant_id = $1)"
        " SELECT 'parked' AS kind, webhook_id::text AS webhook_id FROM backlog"
        " WHERE webhook_id IN (SELECT id FROM mine) AND event_id = $2"
        " UNION SELECT 'failed', webhook_id::text FROM failed_deliveries"
        " WHERE webhook_id IN (SELECT id FROM mine) AND event_id = $2",
        tenant_id,
        event_id,
    )
    parked = {row["webhook_id"] for row in rows if row["kind"] == "parked"}
    failed = {row["webhook_id"] for row in rows if row["kind"] == "failed"}
    return parked, failed


async def webhook_names(executor: Executor, tenant_id: str, ids: Sequence[str]) -> dict[str, str]:
    """``{webhook id: name or url}`` of the tenant's webhooks among ``ids`` (portal)."""
    rows = await executor.fetch(
        "SELECT id::text AS id, COALESCE(name, url) AS label FROM webhooks"
        " WHERE tenant_id = $1 AND id::text = ANY($2::text[])",
        tenant_id,
        list(ids),
    )
    return {row["id"]: row["label"] for row in rows}
