"""Tenant portal links and sessions: only token hashes are stored, links are single use.

A link token is exchanged once (``redeem_link`` is one conditional UPDATE, so two
concurrent exchanges cannot both win) for a session token, which the browser keeps in
a cookie. Tokens carry 256 random bits, so a fast hash is enough for their stored form.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.store.db import Executor

LOGIN_PATH = "/portal/login/"
# A browser session lasts a working day; a new link starts a new one.
SESSION_TTL_S = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class PortalLink:
    """A one-time portal link as handed to the operator (the URL holds the token)."""

    url: str
    expires_at: datetime


def hash_token(token: str) -> bytes:
    """The stored form of a link or session token."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A fresh URL-safe token with 256 random bits."""
    return secrets.token_urlsafe(32)


async def create_link(
    executor: Executor, tenant_id: str, ttl_s: float, base_url: str
) -> PortalLink:
    """A one-time link for ``tenant_id`` valid ``ttl_s`` seconds, under ``base_url``.

    Raises ValueError for an unknown tenant (the foreign key refuses it).
    """
    import asyncpg

    await purge_expired(executor)  # links are created rarely: a good moment to tidy up
    token = new_token()
    try:
        expires_at = await executor.fetchval(
            "INSERT INTO portal_links (token_hash, tenant_id, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING expires_at",
            hash_token(token),
            tenant_id,
            ttl_s,
        )
    except asyncpg.ForeignKeyViolationError:
        raise ValueError(f"no tenant {tenant_id!r}") from None
    return PortalLink(base_url.rstrip("/") + LOGIN_PATH + token, expires_at)


async def redeem_link(executor: Executor, token: str) -> str | None:
    """Use link ``token`` up: its tenant, or None when unknown, expired or already used."""
    tenant_id: str | None = await executor.fetchval(
        "UPDATE portal_links SET used_at = now()"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()"
        " RETURNING tenant_id",
        hash_token(token),
    )
    return tenant_id


async def create_session(executor: Executor, tenant_id: str) -> str:
    """A new session token for ``tenant_id`` (valid SESSION_TTL_S); only its hash is kept."""
    token = new_token()
    await executor.execute(
        "INSERT INTO portal_sessions (token_hash, tenant_id, expires_at)"
        " VALUES ($1, $2, now() + make_interval(secs => $3))",
        hash_token(token),
        tenant_id,
        SESSION_TTL_S,
    )
    return token


async def session_tenant(executor: Executor, token: str) -> str | None:
    """The tenant of a live session ``token``, or None."""
    tenant_id: str | None = await executor.fetchval(
        "SELECT tenant_id FROM portal_sessions WHERE token_hash = $1 AND expires_at > now()",
        hash_token(token),
    )
    return tenant_id


async def end_session(executor: Executor, token: str) -> None:
    """Forget session ``token`` (sign out)."""
    await executor.execute("DELETE FROM portal_sessions WHERE token_hash = $1", hash_token(token))


async def purge_expired(executor: Executor) -> int:
    """Delete expired links and sessions; the number of rows removed."""
    links = await executor.execute("DELETE FROM portal_links WHERE expires_at <= now()")
    sessions = await executor.execute("DELETE FROM portal_sessions WHERE expires_at <= now()")
    return int(links.split()[-1]) + int(sessions.split()[-1])
