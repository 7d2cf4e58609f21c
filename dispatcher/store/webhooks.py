"""Webhooks in Postgres: every query is scoped by tenant, secrets are stored encrypted.

Another tenant's webhook id behaves exactly like a missing one (None / False), so
callers answer 404 for both. Every change bumps ``updated_at``; the table's trigger
NOTIFYs ``hooklane_webhooks`` so routers refresh their subscription index.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.fernet import InvalidToken

from dispatcher.delivery.asymmetric import is_signing_key
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.secrets import SecretBox, SecretKeyError, preview
from dispatcher.store import delivery_options as options
from dispatcher.subscription.rate_limit import rate_of
from dispatcher.subscription.retry_override import stored_override

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


def _uuid(webhook_id: str) -> uuid.UUID | None:
    """The id as a UUID, or None for a string that cannot be one (so: not found)."""
    try:
        return uuid.UUID(webhook_id)
    except (ValueError, TypeError, AttributeError):
        return None


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
    key = _uuid(webhook_id)
    if key is None:
        return None
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
    rows = await executor.fetch(
        f"SELECT {_COLUMNS} FROM webhooks"
        " WHERE tenant_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))"
        " AND ($4::text IS NULL OR topics @> ARRAY[$4::text])"
        " AND ($5::text IS NULL OR state = $5::text)"
        " ORDER BY created_at DESC, id DESC LIMIT $6",
        tenant_id,
        after_at,
        _uuid(after_id) if after_id is not None else None,
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
    key = _uuid(webhook_id)
    if key is None:
        return None
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
    key = _uuid(webhook_id)
    if key is None:
        return False
    deleted = await executor.fetchval(
        "DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2 RETURNING id", key, tenant_id
    )
    return deleted is not None


async def load_target(executor: Executor, box: SecretBox, webhook_id: str) -> WebhookTarget | None:
    """The delivery view of a webhook (any tenant, any state), secrets decrypted.

    ``secrets`` holds the current secret, then the previous one while its rotation
    grace period lasts.
    """
    key = _uuid(webhook_id)
    if key is None:
        return None
    row = await executor.fetchrow(
        "SELECT id::text AS id, tenant_id, url, api_version, state, ordering, max_in_flight,"
        f" rate_limit, retry, secret_ciphertext, {options.TARGET_COLUMNS},"
        " CASE WHEN previous_secret_expires_at > now() THEN previous_secret_ciphertext END"
        " AS previous_secret_ciphertext"
        " FROM webhooks WHERE id = $1",
        key,
    )
    return None if row is None else _target(row, box)


def _target(row: asyncpg.Record, box: SecretBox) -> WebhookTarget:
    secrets = [box.decrypt(row["secret_ciphertext"])]
    if row["previous_secret_ciphertext"] is not None:
        secrets.append(box.decrypt(row["previous_secret_ciphertext"]))
    return WebhookTarget(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        secrets=tuple(secrets),
        api_version=row["api_version"],
        state=row["state"],
        ordering=row["ordering"],
        max_in_flight=row["max_in_flight"],
        rate_limit=rate_of(row["rate_limit"]),
        retry=stored_override(row["retry"]),
        asymmetric=any(map(is_signing_key, secrets)),
        **options.target_options(row, box),
    )


async def failing_since(executor: Executor, webhook_ids: Sequence[str]) -> dict[str, datetime]:
    """When each failing webhook of ``webhook_ids`` started failing (healthy ones absent)."""
    keys = [key for key in map(_uuid, webhook_ids) if key is not None]
    rows = await executor.fetch(
        "SELECT id::text AS id, failing_since FROM webhooks"
        " WHERE id = ANY($1::uuid[]) AND failing_since IS NOT NULL",
        keys,
    )
    return {row["id"]: row["failing_since"] for row in rows}


@dataclass(frozen=True, slots=True)
class VersionedTarget:
    """A webhook's delivery view and its row version (``load_targets``).

    ``target`` is None when ``version`` is the one the caller already holds: the row
    is unchanged and its secrets were not decrypted again.
    """

    version: str
    target: WebhookTarget | None


DECRYPT_SLICE = 50
# ``xmin`` changes with every write to a row (even one that forgets ``updated_at``); the
# suffix changes when the previous secret's grace period ends, which no write marks.
_LOAD_TARGETS = """
SELECT w.id::text AS id, r.version, r.version IS NOT DISTINCT FROM k.known AS unchanged,
       w.tenant_id, w.url, w.api_version, w.state, w.ordering, w.max_in_flight,
       w.rate_limit, w.retry, w.secret_ciphertext, {options},
       CASE WHEN r.previous_active THEN w.previous_secret_ciphertext END
           AS previous_secret_ciphertext
FROM unnest($1::uuid[], $2::text[]) AS k(id, known)
JOIN webhooks AS w ON w.id = k.id
CROSS JOIN LATERAL (
    SELECT COALESCE(w.previous_secret_expires_at > now(), false) AS previous_active
) AS p
CROSS JOIN LATERAL (
    SELECT w.xmin::text || CASE WHEN p.previous_active THEN '+' ELSE '' END AS version,
           p.previous_active
) AS r
""".format(options=", ".join(f"w.{c.strip()}" for c in options.TARGET_COLUMNS.split(",")))


async def load_targets(
    executor: Executor,
    box: SecretBox,
    webhook_ids: Sequence[str],
    known: Mapping[str, str] | None = None,
) -> dict[str, VersionedTarget]:
    """The delivery views of the existing webhooks among ``webhook_ids``, in one query.

    A webhook whose version equals ``known[id]`` comes back with ``target`` None (not
    decrypted); ids that are missing (or not uuids) are absent from the result.
    """
    known = known or {}
    # Results are keyed by the caller's spelling of each id (the row's is canonical).
    asked = {str(key): webhook_id for webhook_id in webhook_ids if (key := _uuid(webhook_id))}
    if not asked:
        return {}
    rows = await executor.fetch(
        _LOAD_TARGETS,
        [uuid.UUID(key) for key in asked],
        [known.get(webhook_id) for webhook_id in asked.values()],
    )
    loaded = {}
    for count, row in enumerate(rows, 1):
        target = None if row["unchanged"] else _target(row, box)
        loaded[asked[row["id"]]] = VersionedTarget(row["version"], target)
        if count % DECRYPT_SLICE == 0:
            # Decrypting is CPU work on the event loop: let deliveries run in between.
            await asyncio.sleep(0)
    return loaded


async def disable_webhook(executor: Executor, webhook_id: str, reason: str) -> bool:
    """Set the webhook DISABLED with ``reason``; False when it was not ENABLED."""
    updated = await executor.fetchval(
        "UPDATE webhooks SET state = 'DISABLED', disabled_reason = $2, updated_at = now()"
        " WHERE id = $1 AND state = 'ENABLED' RETURNING id",
        uuid.UUID(webhook_id),
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
        uuid.UUID(webhook_id),
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
    key = _uuid(webhook_id)
    if key is None:
        return None
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
