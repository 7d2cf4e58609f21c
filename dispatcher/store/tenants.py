"""Tenants and their API keys; keys are stored as SHA-256 hashes and shown once."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.store.db import Connection, Executor

KEY_PREFIX = "hl_"


def hash_api_key(api_key: str) -> bytes:
    """The stored form of an API key. Keys carry 256 random bits, so a fast hash suffices."""
    return hashlib.sha256(api_key.encode()).digest()


async def create_tenant(conn: Connection, name: str) -> tuple[str, str]:
    """Create a tenant and its first API key; returns (tenant_id, api_key)."""
    tenant_id = "ten_" + uuid.uuid4().hex
    async with conn.transaction():
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant_id, name)
        api_key = await issue_api_key(conn, tenant_id)
    return tenant_id, api_key


async def ensure_tenant(conn: Connection, tenant_id: str, name: str) -> None:
    """Create tenant ``tenant_id`` unless it exists (dev stack, tests)."""
    await conn.execute(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        tenant_id,
        name,
    )


async def tenant_exists(executor: Executor, tenant_id: str) -> bool:
    """Whether tenant ``tenant_id`` exists."""
    return bool(await executor.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant_id))


async def list_tenants(executor: Executor) -> list[tuple[str, str, datetime]]:
    """Every tenant as ``(id, name, created_at)``, oldest first."""
    rows = await executor.fetch("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")
    return [(row["id"], row["name"], row["created_at"]) for row in rows]


async def issue_api_key(conn: Connection, tenant_id: str) -> str:
    """A new API key for ``tenant_id``; only its hash is stored."""
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix) VALUES ($1, $2, $3, $4)",
        "key_" + uuid.uuid4().hex,
        tenant_id,
        hash_api_key(api_key),
        api_key[:7],
    )
    return api_key


async def tenant_for_api_key(conn: Executor, api_key: str) -> str | None:
    """The tenant that owns ``api_key``, or None for an unknown or revoked key."""
    tenant_id: str | None = await conn.fetchval(
        "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_api_key(api_key),
    )
    return tenant_id
