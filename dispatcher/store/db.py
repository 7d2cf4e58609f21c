"""Postgres: database creation, versioned migrations and the connection pool."""

from __future__ import annotations

import contextlib
import importlib.resources
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # What store functions take: a connection, or one borrowed from a pool.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    # What single-statement store functions take: any of the above, or the pool itself.
    Executor: TypeAlias = Connection | asyncpg.Pool[asyncpg.Record]

log = structlog.get_logger(__name__)

# Errors after which Postgres may answer again (it restarted, a connection dropped, a
# statement failed): callers log them and retry later instead of crashing.
# InternalClientError: a pooled connection whose backend was terminated while idle
# (the FATAL message read, the socket's close not yet) refuses its next statement with
# "cannot switch to state 12; another operation (2) is in progress" (MagicStack/asyncpg
# #1069, #784); the pool replaces that connection. Uncaught, it ended the router's
# consumer loop (the process exits) or the deliverer's dispatch loop.
TRANSIENT_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


# Postgres cannot be reached or dropped the connection, as opposed to a statement that
# failed: refused or reset sockets, a connection lost mid-statement or left unusable,
# the server starting up or shutting down, out of connections, and the 55000 a
# database refusing connections answers (``ALLOW_CONNECTIONS false``).
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` says Postgres is unavailable (retry later), not that a statement
    is wrong. The 55000 class is matched exactly: its subclasses (a lock not available,
    an object in use) are about a statement."""
    return (
        isinstance(error, _UNAVAILABLE) or type(error) is asyncpg.ObjectNotInPrerequisiteStateError
    )


@contextlib.asynccontextmanager
async def try_advisory_lock(conn: Connection, key: int) -> AsyncIterator[bool]:
    """Hold session advisory lock ``key`` inside the block if it is free; yields whether.

    For periodic jobs that one process at a time should run (purges): the others skip.
    """
    acquired = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
    try:
        yield acquired
    finally:
        if acquired:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# One fixed key so concurrent `migrate` runs (several processes starting) serialise.
_MIGRATION_LOCK = 7_405_131_001


class DatabaseError(RuntimeError):
    """The database could not be reached or prepared; the message says why."""


def _split_dbname(database_url: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    dbname = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    return maintenance, dbname


async def create_database_if_missing(database_url: str) -> bool:
    """Create the database named in ``database_url``; True when it was created."""
    maintenance, dbname = _split_dbname(database_url)
    try:
        conn = await asyncpg.connect(maintenance, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to Postgres at {maintenance}: {exc}") from exc
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        log.info("database.created", database=dbname)
        return True
    finally:
        await conn.close()


async def drop_database(database_url: str) -> None:
    """Drop the database named in ``database_url`` (tests)."""
    maintenance, dbname = _split_dbname(database_url)
    conn = await asyncpg.connect(maintenance, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await conn.close()


def migrations() -> list[tuple[int, str, str]]:
    """The bundled migrations as (version, name, sql), in version order."""
    found = []
    for entry in importlib.resources.files("dispatcher.store.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found)


async def migrate(database_url: str) -> list[str]:
    """Create the database if needed and apply pending migrations; returns their names."""
    await create_database_if_missing(database_url)
    conn = await asyncpg.connect(database_url, timeout=10)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
            log.info("migration.applied", migration=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied


async def delete_in_batches(executor: Executor, statement: str, *args: Any, batch: int) -> int:
    """Repeat a DELETE whose last parameter is its LIMIT until it deletes fewer than ``batch``.

    Returns how many rows it deleted in all; bounded batches keep each lock short.
    """
    total = 0
    while True:
        status = await executor.execute(statement, *args, batch)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch:
            return total


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(database_url: str, **kwargs: Any) -> asyncpg.Pool:
    """A pool whose json/jsonb columns encode and decode with orjson."""
    try:
        pool = await asyncpg.create_pool(database_url, init=_init_connection, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to Postgres at {database_url}: {exc}") from exc
    assert pool is not None
    return pool
