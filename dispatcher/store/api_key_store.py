"""API keys (the ``api_keys`` table, DESIGN.md §13): created, listed, revoked; stored hashed.

A key is shown once, when it is made; only its SHA-256 hash and its first characters
(``prefix``, to tell keys apart in a list) are kept. Revoking a key is one transaction
that also deletes the portal sessions and links it made (``dispatcher.store.portal``),
so nothing it opened outlives it (the portal checks the key again on every lookup,
which closes the race with a link redeemed during the revocation).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dispatcher.store import portal

if TYPE_CHECKING:
    from dispatcher.store.db import Connection, Executor

KEY_PREFIX = "hl_"
PREFIX_LENGTH = 7  # "hl_" and four characters of the key
# last_used_at is refreshed at most this often, so a busy key is not a write per request.
LAST_USED_RESOLUTION_S = 60.0
_COLUMNS = "id, tenant_id, name, prefix, created_at, last_used_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known about an API key (never the key itself)."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        return cls(**{field: row[field] for field in cls.__slots__})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who an accepted API key speaks for: its tenant, and the key's id."""

    tenant_id: str
    api_key_id: str


def hash_api_key(api_key: str) -> bytes:
    """The stored form of an API key. Keys carry 256 random bits, so a fast hash suffices."""
    return hashlib.sha256(api_key.encode()).digest()


async def create_api_key(executor: Executor, tenant_id: str, name: str) -> tuple[ApiKey, str]:
    """A new API key named ``name`` for ``tenant_id``: its record and the key (shown once).

    Raises ValueError for an unknown tenant (the foreign key refuses it).
    """
    import asyncpg

    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        row = await executor.fetchrow(
            "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, name)"
            f" VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
            "key_" + uuid.uuid4().hex,
            tenant_id,
            hash_api_key(api_key),
            api_key[:PREFIX_LENGTH],
            name,
        )
    except asyncpg.ForeignKeyViolationError:
        raise ValueError(f"no tenant {tenant_id!r}") from None
    return ApiKey.from_row(row), api_key


async def issue_api_key(executor: Executor, tenant_id: str, name: str = "") -> str:
    """A new API key for ``tenant_id``; only its hash is stored."""
    _, api_key = await create_api_key(executor, tenant_id, name)
    return api_key


async def list_api_keys(executor: Executor, tenant_id: str) -> list[ApiKey]:
    """Every key of ``tenant_id``, revoked ones included, oldest first."""
    rows = await executor.fetch(
        f"SELECT {_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
        tenant_id,
    )
    return [ApiKey.from_row(row) for row in rows]


async def revoke_api_key(conn: Connection, key_id: str, tenant_id: str | None = None) -> bool:
    """Revoke key ``key_id`` (of ``tenant_id`` when given) with its portal sessions and links.

    False when there is no such key (or it is another tenant's). Revoking twice keeps
    the first ``revoked_at``.
    """
    async with conn.transaction():
        found = await conn.fetchval(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) RETURNING id",
            key_id,
            tenant_id,
        )
        if found is None:
            return False
        await portal.forget_api_key(conn, key_id)
    return True


async def caller_for_api_key(executor: Executor, api_key: str) -> Caller | None:
    """The tenant and key id of a live ``api_key`` (None when unknown or revoked).

    Notes the use in ``last_used_at`` (at most once per LAST_USED_RESOLUTION_S), in the
    same round trip.
    """
    row = await executor.fetchrow(
        "WITH key AS ("
        "  SELECT id, tenant_id, last_used_at FROM api_keys"
        "  WHERE key_hash = $1 AND revoked_at IS NULL"
        "), touched AS ("
        "  UPDATE api_keys SET last_used_at = now() FROM key"
        "  WHERE api_keys.id = key.id AND (key.last_used_at IS NULL"
        "   OR key.last_used_at < now() - make_interval(secs => $2))"
        ") SELECT id, tenant_id FROM key",
        hash_api_key(api_key),
        LAST_USED_RESOLUTION_S,
    )
    return None if row is None else Caller(row["tenant_id"], row["id"])
