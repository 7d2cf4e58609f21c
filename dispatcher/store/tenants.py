"""Tenants (the ``tenants`` table, DESIGN.md §13): created with a first API key, listed.

Their API keys are ``dispatcher.store.api_key_store``'s.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from dispatcher.store.api_key_store import issue_api_key

if TYPE_CHECKING:
    from dispatcher.store.db import Connection, Executor


async def create_tenant(conn: Connection, name: str) -> tuple[str, str]:
    """Create a tenant and its first API key; returns (tenant_id, api_key)."""
    tenant_id = "ten_" + uuid.uuid4().hex
    async with conn.transaction():
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant_id, name)
        api_key = await issue_api_key(conn, tenant_id, "first key")
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
