"""Tenant portal links and sessions: only token hashes are stored, links are single use.

A link token is exchanged once (``redeem_link`` is one conditional UPDATE, so two
concurrent exchanges cannot both win) for a session token, which the browser keeps in
a cookie. Tokens carry 256 random bits, so a fast hash is enough for their stored form.

A link made with an API key remembers the key, and so does the session it opens:
revoking the key deletes both (``dispatcher.store.api_key_store.revoke_api_key``), and every
lookup here also refuses a revoked key's link or session, so one redeemed while the
key was being revoked dies with it too.
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
class Grant:
    """What a redeemed link or a live session opens: a tenant, through an API key or not."""

    tenant_id: str
    api_key_id: str | None = None


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
    executor: Executor,
    tenant_id: str,
    ttl_s: float,
    base_url: str,
    api_key_id: str | None = None,
) -> PortalLink:
    """A one-time link for ``tenant_id`` valid ``ttl_s`` seconds, under ``base_url``.

    ``api_key_id`` is the key that asked for it (None for the operator's CLI).

    Raises ValueError for an unknown tenant (the foreign key refuses it).
    """
    import asyncpg

    await purge_expired(executor)  # links are created rarely: a good moment to tidy up
    token = new_token()
    try:
        expires_at = await executor.fetchval(
            "INSERT INTO portal_links (token_hash, tenant_id, expires_at, api_key_id)"
            " VALUES ($1, $2, now() + make_interval(secs => $3), $4) RETURNING expires_at",
            hash_token(token),
            tenant_id,
            ttl_s,
            api_key_id,
        )
    except asyncpg.ForeignKeyViolationError:
        raise ValueError(f"no tenant {tenant_id!r}") from None
    return PortalLink(base_url.rstrip("/") + LOGIN_PATH + token, expires_at)


# A link or session made with a key that has since been revoked opens nothing.
_KEY_LIVE = (
    "NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = {table}.api_key_id"
    " AND k.revoked_at IS NOT NULL)"
)


async def redeem_link(executor: Executor, token: str) -> Grant | None:
    """Use link ``token`` up: what it opens, or None when unknown, expired, used or revoked."""
    row = await executor.fetchrow(
        "UPDATE portal_links SET used_at = now()"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()"
        f" AND {_KEY_LIVE.format(table='portal_links')}"
        " RETURNING tenant_id, api_key_id",
        hash_token(token),
    )
    return None if row is None else Grant(row["tenant_id"], row["api_key_id"])


async def create_session(executor: Executor, grant: Grant) -> str:
    """A new session token for ``grant`` (valid SESSION_TTL_S); only its hash is kept."""
    token = new_token()
    await executor.execute(
        "INSERT INTO portal_sessions (token_hash, tenant_id, expires_at, api_key_id)"
        " VALUES ($1, $2, now() + make_interval(secs => $3), $4)",
        hash_token(token),
        grant.tenant_id,
        SESSION_TTL_S,
        grant.api_key_id,
    )
    return token


async def session_tenant(executor: Executor, token: str) -> str | None:
    """The tenant of a live session ``token`` (its key, if any, not revoked), or None."""
    tenant_id: str | None = await executor.fetchval(
        "SELECT tenant_id FROM portal_sessions WHERE token_hash = $1 AND expires_at > now()"
        f" AND {_KEY_LIVE.format(table='portal_sessions')}",
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


async def forget_api_key(executor: Executor, api_key_id: str) -> None:
    """Delete the sessions and links a revoked API key opened (``api_key_store.revoke_api_key``,
    in its transaction)."""
    await executor.execute("DELETE FROM portal_sessions WHERE api_key_id = $1", api_key_id)
    await executor.execute("DELETE FROM portal_links WHERE api_key_id = $1", api_key_id)
