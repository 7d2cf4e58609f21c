"""Webhooks in Postgres: every query is scoped by tenant, secrets are stored encrypted.

Another tenant's webhook id behaves exactly like a missing one (None / False), so
callers answer 404 for both. Every change bumps ``updated_at``; the table's trigger
NOTIFYs ``hooklane_webhooks`` so routers refresh their subscription index.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.fernet import InvalidToken

from dispatcher.delivery.secrets import SecretBox, SecretKeyError, preview
from dispatcher.ids import parse_uuid, valid_uuids
from dispatcher.store import webhook_options as options

if TYPE_CHECKING:
    import asyncpg

    from dispatcher.store.db import Connection, Executor

# How long a replaced secret still signs deliveries (a second signature), so
# receivers can roll their verification key without dropping requests.
ROTATION_GRACE = "24 hours"

_COLUMNS = (
    "id::text AS id, tenant_id, url, name, topics, state, api_version, ordering,"
    " max_in_flight, secret_preview, disabled_reason, last_success_at, last_failure_at,"
    " consecutive_failures, created_at, updated_at, filter, rate_limit, retry, concurrency, "
    + options.READ_COLUMNS
)
# Plain columns a partial update may set (``secret`` is handled separately).
UPDATABLE = frozenset(
    {
        "url",
        "name",
        "topics",
        "state",
        "api_version",
        "ordering",
        "max_in_flight",
        "filter",
        "rate_limit",
        "retry",
    }
)


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as tenants see it (never with its secret)."""

    id: str
    tenant_id: str
    url: str
    name: str | None
    topics: tuple[str, ...]
    state: str
    api_version: str
    ordering: str
    max_in_flight: int
    secret_preview: str
    disabled_reason: str | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime
    # Subscription fields (issue #14); None: the defaults (every event, unlimited,
    # the operator's retry settings).
    filter: dict[str, Any] | None = None
    rate_limit: dict[str, int] | None = None
    retry: dict[str, str] | None = None
    # The adaptive window of an unordered webhook as its deliverer last reported it
    # (None: not reported yet).
    concurrency: int | None = None
    # Delivery options (DESIGN.md §11), as reads show them.
    headers: dict[str, str] | None = None
    signature_scheme: str = "v1"
    public_key: str | None = None  # whpk_…, for v1a
    tls_client_certificate: dict[str, str] | None = None  # subject, not_after, fingerprint
    auth: dict[str, str] | None = None  # without its secret member


def _webhook(row: asyncpg.Record) -> Webhook:
    values = dict(row)
    values["topics"] = tuple(values["topics"])
    return Webhook(**values)


async def create_webhook(
    executor: Executor,
    box: SecretBox,
    *,
    tenant_id: str,
    url: str,
    topics: Sequence[str],
    secret: str,
    name: str | None = None,
    state: str = "ENABLED",
    api_version: str = "v1.0",
    ordering: str = "ordered",
    max_in_flight: int = 1,
    filter: Mapping[str, Any] | None = None,
    rate_limit: Mapping[str, int] | None = None,
    retry: Mapping[str, str] | None = None,
    delivery_options: Mapping[str, Any] | None = None,
) -> Webhook:
    """Insert a webhook with a new uuid4 id; the secret is stored encrypted.

    ``executor`` must decode jsonb (``dispatcher.store.db.create_pool``) for the
    subscription fields. ``delivery_options`` holds checked ``options.OPTIONS``.
    """
    extra = options.option_values(box, delivery_options or {})
    columns = "".join(f", {column}" for column in extra)
    places = "".join(f", ${index}" for index in range(15, 15 + len(extra)))
    row = await executor.fetchrow(
        "INSERT INTO webhooks (id, tenant_id, url, name, topics, state, api_version, ordering,"
        f" max_in_flight, secret_ciphertext, secret_preview, filter, rate_limit, retry{columns})"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14{places})"
        f" RETURNING {_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        url,
        name,
        list(topics),
        state,
        api_version,
        ordering,
        max_in_flight,
        box.encrypt(secret),
        preview(secret),
        filter,
        rate_limit,
        retry,
        *extra.values(),
    )
    assert row is not None
    return _webhook(row)


async def get_webhook(executor: Executor, tenant_id: str, webhook_id: str) -> Webhook | None:
    """Webhook ``webhook_id`` of ``tenant_id``, or None (missing, or another tenant's)."""
    try:
        key = parse_uuid(webhook_id)
    except ValueError:
        return None  # not a UUID: no such webhook
    row = await executor.fetchrow(
        f"SELECT {_COLUMNS} FROM webhooks WHERE id = $1 AND tenant_id = $2", key, tenant_id
    )
    return None if row is None else _webhook(row)


async def list_webhooks(
    executor: Executor,
    tenant_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
    topic: str | None = None,
    state: str | None = None,
) -> tuple[list[Webhook], bool]:
    """One page of the tenant's webhooks, newest first; True when more follow.

    ``after`` is the (created_at, id) keyset cursor of the last webhook of the
    previous page.
    """
    after_at, after_id = after if after is not None else (None, None)
    try:
        after_key = None if after_id is None else parse_uuid(after_id)
    except ValueError:
        after_key = None
    rows = await executor.fetch(
        f"SELECT {_COLUMNS} FROM webhooks"
        " WHERE tenant_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))"
        " AND ($4::text IS NULL OR topics @> ARRAY[$4::text])"
        " AND ($5::text IS NULL OR state = $5::text)"
        " ORDER BY created_at DESC, id DESC LIMIT $6",
        tenant_id,
        after_at,
        after_key,
        topic,
        state,
        limit + 1,
    )
    return [_webhook(row) for row in rows[:limit]], len(rows) > limit


async def update_webhook(
    executor: Executor,
    box: SecretBox,
    tenant_id: str,
    webhook_id: str,
    changes: Mapping[str, Any],
) -> Webhook | None:
    """Apply a partial update; None when the tenant has no such webhook.

    ``changes`` holds UPDATABLE columns, checked ``options.OPTIONS`` and optionally
    ``secret`` (a ``v1a`` webhook's is its ``whsk_`` private key). A new secret keeps
    the old one valid as ``previous_secret`` for ROTATION_GRACE. Setting ``state``
    to ENABLED clears ``disabled_reason`` and, when the webhook was DISABLED or PAUSED,
    its failure streak (so a re-enabled endpoint is not disabled again at once, and
    time spent paused, when nothing was tried, never counts as failing).
    """
    try:
        key = parse_uuid(webhook_id)
    except ValueError:
        return None  # not a UUID: no such webhook
    unknown = set(changes) - UPDATABLE - options.OPTIONS - {"secret"}
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    args: list[Any] = [key, tenant_id]
    assignments = ["updated_at = now()"]
    columns = {column: changes[column] for column in sorted(set(changes) & UPDATABLE)}
    columns |= options.option_values(box, changes)
    for column, value in columns.items():
        args.append(list(value) if column == "topics" else value)
        assignments.append(f"{column} = ${len(args)}")
    if changes.get("state") == "ENABLED":
        assignments += [
            "disabled_reason = NULL",
            "failing_since = CASE WHEN state IN ('DISABLED', 'PAUSED') THEN NULL"
            " ELSE failing_since END",
            "consecutive_failures = CASE WHEN state IN ('DISABLED', 'PAUSED') THEN 0"
            " ELSE consecutive_failures END",
        ]
    if "secret" in changes:
        secret: str = changes["secret"]
        args += [box.encrypt(secret), preview(secret)]
        # Right-hand sides see the row's old values: the old secret becomes previous.
        assignments += [
            "previous_secret_ciphertext = secret_ciphertext",
            f"previous_secret_expires_at = now() + interval '{ROTATION_GRACE}'",
            f"secret_ciphertext = ${len(args) - 1}",
            f"secret_preview = ${len(args)}",
        ]
    row = await executor.fetchrow(
        f"UPDATE webhooks SET {', '.join(assignments)}"
        f" WHERE id = $1 AND tenant_id = $2 RETURNING {_COLUMNS}",
        *args,
    )
    return None if row is None else _webhook(row)


async def delete_webhook(executor: Executor, tenant_id: str, webhook_id: str) -> bool:
    """Delete the tenant's webhook; False when there was none."""
    try:
        key = parse_uuid(webhook_id)
    except ValueError:
        return False  # not a UUID: no such webhook
    deleted = await executor.fetchval(
        "DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2 RETURNING id", key, tenant_id
    )
    return deleted is not None


async def failing_since(executor: Executor, webhook_ids: Sequence[str]) -> dict[str, datetime]:
    """When each failing webhook of ``webhook_ids`` started failing (healthy ones absent)."""
    keys = list(valid_uuids(webhook_ids).values())
    rows = await executor.fetch(
        "SELECT id::text AS id, failing_since FROM webhooks"
        " WHERE id = ANY($1::uuid[]) AND failing_since IS NOT NULL",
        keys,
    )
    return {row["id"]: row["failing_since"] for row in rows}


async def disable_webhook(executor: Executor, webhook_id: str, reason: str) -> bool:
    """Set the webhook DISABLED with ``reason``; False when it was not ENABLED."""
    updated = await executor.fetchval(
        "UPDATE webhooks SET state = 'DISABLED', disabled_reason = $2, updated_at = now()"
        " WHERE id = $1 AND state = 'ENABLED' RETURNING id",
        parse_uuid(webhook_id),
        reason,
    )
    return updated is not None


async def set_concurrency(executor: Executor, webhook_id: str, concurrency: int) -> None:
    """Record an unordered webhook's adaptive window (shown as ``concurrency``).

    Migration 007 keeps this column out of the ``hooklane_webhooks`` NOTIFY, so the
    report wakes no router or deliverer.
    """
    await executor.execute(
        "UPDATE webhooks SET concurrency = $2 WHERE id = $1 AND concurrency IS DISTINCT FROM $2",
        parse_uuid(webhook_id),
        concurrency,
    )


@dataclass(frozen=True, slots=True)
class FailingWebhook:
    """A webhook failing now, from its health columns."""

    id: str
    tenant_id: str
    url: str
    state: str
    failing_since: datetime
    consecutive_failures: int


async def failing_webhooks(executor: Executor, limit: int) -> list[FailingWebhook]:
    """The webhooks failing longest, oldest ``failing_since`` first."""
    rows = await executor.fetch(
        "SELECT id::text, tenant_id, url, state, failing_since, consecutive_failures"
        " FROM webhooks WHERE failing_since IS NOT NULL"
        " ORDER BY failing_since, id LIMIT $1",
        limit,
    )
    return [FailingWebhook(*row.values()) for row in rows]


# What the subscription index (``dispatcher.router.subscription_index``) needs of a webhook.
# PAUSED webhooks are routed: the deliverer keeps their deliveries in the backlog.
ROUTED_STATES = ("ENABLED", "PAUSED")
_ROUTING = "id::text AS id, tenant_id, topics, state, filter, updated_at"


async def routed_webhooks(executor: Executor) -> list[asyncpg.Record]:
    """The routing row of every routed (ENABLED or PAUSED) webhook."""
    return await executor.fetch(
        f"SELECT {_ROUTING} FROM webhooks WHERE state IN ('ENABLED', 'PAUSED')"
    )


async def routing_row(executor: Executor, webhook_id: str) -> asyncpg.Record | None:
    """One webhook's routing row whatever its state; None if absent or not a uuid."""
    try:
        key = parse_uuid(webhook_id)
    except ValueError:
        return None  # not a UUID: no such webhook
    return await executor.fetchrow(f"SELECT {_ROUTING} FROM webhooks WHERE id = $1", key)


ENCRYPTED = ("secret_ciphertext", "previous_secret_ciphertext", *options.ENCRYPTED)
_REENCRYPTED = ", ".join(f"{column} = ${index}" for index, column in enumerate(ENCRYPTED, 2))


async def reencrypt_secrets(conn: Connection, box: SecretBox, batch_size: int = 500) -> int:
    """Re-encrypt every stored webhook secret under ``box``'s first key; the count.

    Covers ``ENCRYPTED`` (the secrets and the delivery options' secrets). Works in batches,
    each its own transaction with the rows locked, so it is safe while the API runs
    and may simply be run again after an interruption. A secret that no key opens
    stops it with SecretKeyError naming the webhook (batches before it stay done).
    """
    rotated = 0
    last_id: object = None
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                f"SELECT id, {', '.join(ENCRYPTED)} FROM webhooks"
                " WHERE $1::uuid IS NULL OR id > $1::uuid"
                " ORDER BY id LIMIT $2 FOR UPDATE",
                last_id,
                batch_size,
            )
            for row in rows:
                try:
                    rotated_row = [row[c] and box.rotate(row[c]) for c in ENCRYPTED]
                except InvalidToken:
                    raise SecretKeyError(
                        f"webhook {row['id']}: its secret cannot be decrypted with any key"
                        " of HOOKLANE_SECRET_KEY (was an old key dropped too early?)"
                    ) from None
                await conn.execute(
                    f"UPDATE webhooks SET {_REENCRYPTED} WHERE id = $1", row["id"], *rotated_row
                )
                rotated += 1
        if len(rows) < batch_size:
            return rotated
        last_id = rows[-1]["id"]


async def subscriber_filters(
    executor: Executor, tenant_id: str, topic: str, created_by: datetime
) -> dict[str, Any]:
    """``{id: stored filter}`` of the tenant's webhooks on ``topic`` that existed at
    ``created_by`` and are not DISABLED (who an event routed then may concern)."""
    rows = await executor.fetch(
        "SELECT id::text AS id, filter FROM webhooks WHERE tenant_id = $1"
        " AND $2 = ANY(topics) AND created_at <= $3 AND state <> 'DISABLED'",
        tenant_id,
        topic,
        created_by,
    )
    return {row["id"]: row["filter"] for row in rows}


async def webhook_names(executor: Executor, tenant_id: str, ids: Sequence[str]) -> dict[str, str]:
    """``{webhook id: name or url}`` of the tenant's webhooks among ``ids`` (portal)."""
    rows = await executor.fetch(
        "SELECT id::text AS id, COALESCE(name, url) AS label FROM webhooks"
        " WHERE tenant_id = $1 AND id::text = ANY($2::text[])",
        tenant_id,
        list(ids),
    )
    return {row["id"]: row["label"] for row in rows}
