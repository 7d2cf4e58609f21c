"""Postgres away: the API answers 503 with Retry-After (not 500), and recovers by itself."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest

from dispatcher.settings import Settings
from dispatcher.store import db
from dispatcher.store.tenants import create_tenant
from tests.conftest import TEST_SECRET_KEY
from tests.support.api import api_client
from tests.test_db_failures import GONE, IDS


@pytest.mark.parametrize("error", GONE, ids=IDS)
def test_a_vanished_postgres_is_unavailable(error: BaseException) -> None:
    assert db.unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.LockNotAvailableError("could not obtain lock"),  # 55P03, a 55000 subclass
        asyncpg.DataError("invalid input"),
        asyncpg.UndefinedTableError('relation "x" does not exist'),
        ValueError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_failed_statement_is_not(error: BaseException) -> None:
    assert not db.unavailable(error)


async def test_the_api_answers_503_while_postgres_is_away(database_url: str) -> None:
    base = database_url.rsplit("/", 1)[0]
    name = f"hooklane_unavailable_{uuid.uuid4().hex[:8]}"
    url = f"{base}/{name}"
    await db.migrate(url)
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        conn = await asyncpg.connect(url)
        try:
            _, api_key = await create_tenant(conn, "Tenant A")
        finally:
            await conn.close()
        headers = {"Authorization": f"Bearer {api_key}"}
        async with api_client(Settings(database_url=url, secret_key=TEST_SECRET_KEY)) as client:
            assert (await client.get("/webhooks", headers=headers)).status == 200
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
            for _ in range(3):  # a terminated pooled connection, then refused new ones
                response = await client.get("/webhooks", headers=headers)
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                body = await response.json()
                assert body["error"]["code"] == "unavailable"
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            for _ in range(50):
                if (await client.get("/webhooks", headers=headers)).status == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the API did not recover once Postgres accepted connections")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
        await db.drop_database(url)


def test_every_route_that_reads_the_database_documents_the_503() -> None:
    """Every operation but the static document can meet an unavailable database."""
    spec = orjson.loads((Path(__file__).parent.parent / "schemas" / "openapi.json").read_bytes())
    missing = [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
        and "responses" in operation
        and path != "/openapi.json"
        and "503" not in operation["responses"]
    ]
    assert missing == []
