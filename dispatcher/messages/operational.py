"""Operational events: a tenant's webhooks told about its other webhooks' trouble.

Pure builders of the ``HOOKLANE.*`` catalog topics' events (schemas in migration 006)
and the rule that keeps a webhook from hearing about itself (no feedback loop: a
failing endpoint would otherwise generate deliveries to itself that fail in turn).
The deliverer publishes these through the normal pipeline, on the tenant's behalf.

Event ids are derived from what they announce, so a re-announcement after a crash
(at-least-once) is the same id and idempotent ingest drops it: one DISABLED per
disabling, one PARKED per parking episode (``failing_since`` names the episode), one
RECOVERED per episode, one GAVE_UP per given-up delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from dispatcher.messages.wire import Event

WEBHOOK_DISABLED = "HOOKLANE.WEBHOOK.DISABLED"
WEBHOOK_PARKED = "HOOKLANE.WEBHOOK.PARKED"
WEBHOOK_RECOVERED = "HOOKLANE.WEBHOOK.RECOVERED"
DELIVERY_GAVE_UP = "HOOKLANE.DELIVERY.GAVE_UP"
TOPICS = frozenset({WEBHOOK_DISABLED, WEBHOOK_PARKED, WEBHOOK_RECOVERED, DELIVERY_GAVE_UP})

# Namespace of the deterministic ids (uuid5) of operational events.
_NAMESPACE = uuid.UUID("6f1c3c1e-0b0e-4c57-9d43-5c3f0b9a2d15")
# Error texts are receivers' words; keep what we repeat to others short.
MAX_ERROR = 500


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _event(
    topic: str, tenant_id: str, now: datetime, identity: tuple[str, ...], data: dict[str, Any]
) -> Event:
    event_id = str(uuid.uuid5(_NAMESPACE, "|".join((topic, tenant_id, *identity))))
    return Event(event_id, topic, tenant_id, int(now.timestamp()), data)


def _error(error: str | None) -> str | None:
    return None if error is None else error[:MAX_ERROR]


def webhook_disabled(
    tenant_id: str, webhook_id: str, reason: str, failing_since: datetime | None, now: datetime
) -> Event:
    """``HOOKLANE.WEBHOOK.DISABLED``: ``webhook_id`` was disabled for ``reason``."""
    return _event(
        WEBHOOK_DISABLED,
        tenant_id,
        now,
        # A disabling after a failure episode is that episode's; a 410 is its moment's.
        (webhook_id, _iso(failing_since or now)),
        {
            "webhook_id": webhook_id,
            "reason": reason,
            "failing_since": None if failing_since is None else _iso(failing_since),
        },
    )


def webhook_parked(
    tenant_id: str,
    webhook_id: str,
    backlog: int,
    failing_since: datetime,
    last_error: str | None,
    now: datetime,
) -> Event:
    """``HOOKLANE.WEBHOOK.PARKED``: one per parking episode (keyed by ``failing_since``)."""
    return _event(
        WEBHOOK_PARKED,
        tenant_id,
        now,
        (webhook_id, _iso(failing_since)),
        {
            "webhook_id": webhook_id,
            "backlog": backlog,
            "failing_since": _iso(failing_since),
            "last_error": _error(last_error),
        },
    )


def webhook_recovered(
    tenant_id: str, webhook_id: str, backlog: int, failing_since: datetime, now: datetime
) -> Event:
    """``HOOKLANE.WEBHOOK.RECOVERED``: the episode that began at ``failing_since`` ended."""
    return _event(
        WEBHOOK_RECOVERED,
        tenant_id,
        now,
        (webhook_id, _iso(failing_since)),
        {"webhook_id": webhook_id, "backlog": backlog, "failing_since": _iso(failing_since)},
    )


def delivery_gave_up(
    tenant_id: str,
    webhook_id: str,
    event_id: str,
    topic: str,
    attempts: int,
    last_error: str | None,
    now: datetime,
) -> Event:
    """``HOOKLANE.DELIVERY.GAVE_UP``: ``event_id`` will not be retried for ``webhook_id``."""
    return _event(
        DELIVERY_GAVE_UP,
        tenant_id,
        now,
        (webhook_id, event_id),
        {
            "webhook_id": webhook_id,
            "event_id": event_id,
            "topic": topic,
            "attempts": attempts,
            "last_error": _error(last_error),
        },
    )


def recipients(event: Event, subscribers: Iterable[str]) -> list[str]:
    """The subscribers that may receive ``event``: never the webhook it is about."""
    if event.topic not in TOPICS:
        return list(subscribers)
    about = event.data.get("webhook_id")
    return [webhook_id for webhook_id in subscribers if webhook_id != about]


def is_operational(topic: str) -> bool:
    """Whether ``topic`` is one of Hooklane's own operational topics."""
    return topic in TOPICS


def announces_gave_up(topic: str) -> bool:
    """Whether giving up a delivery of ``topic`` is announced with ``DELIVERY.GAVE_UP``.

    Not for operational events themselves: two failing webhooks subscribed to each
    other's announcements would otherwise tell each other about every given-up
    announcement, forever.
    """
    return not is_operational(topic)
