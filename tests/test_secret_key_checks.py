"""Secrets as a newcomer meets them: a malformed key is refused before any database
is touched, and a stored secret no key opens is a 503 with a clear log line."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
from cryptography.fernet import Fernet
from structlog.testing import capture_logs

from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.api import TOPIC, api_client
from tests.support.pipeline import create_webhook
from tests.support.receiver import Receiver
from tests.test_cli import hooklane


@pytest.mark.parametrize("command", ["api", "router", "deliverer", "rotate-secrets"])
async def test_a_malformed_secret_key_is_refused_before_the_database_is_created(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, command: str
) -> None:
    """HOOKLANE_SECRET_KEY that is no Fernet key: exit 2, one line naming it; the
    database it would have used does not exist afterwards."""
    name = f"hooklane_never_{uuid.uuid4().hex[:8]}"
    fresh = settings.replace(
        secret_key="not-a-fernet-key",
        database_url=settings.database_url.rsplit("/", 1)[0] + "/" + name,
    )
    code, _, err = await hooklane(fresh, command, cwd=tmp_path)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "HOOKLANE_SECRET_KEY" in lines[0] and "secret-key" in lines[0]
    assert not await pool.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)


async def test_a_secret_no_key_opens_answers_503_and_logs_the_fix(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """The API runs on a key that did not encrypt the webhook's secret (a rotation done
    out of order): the test trigger answers 503 and the log line says what to do."""
    async with Receiver() as rx:
        hook = await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        other_key = settings.replace(secret_key=Fernet.generate_key().decode())
        async with api_client(other_key) as client:
            with capture_logs() as logs:
                response = await client.post(
                    f"/webhooks/test/trigger/{hook.id}", headers=tenant.headers
                )
            assert response.status == 503
            error = (await response.json())["error"]
            assert error["code"] == "secret_unavailable"
            assert "HOOKLANE_SECRET_KEY" in error["message"]
        assert rx.requests == []  # nothing was sent
    [line] = [entry for entry in logs if entry["event"] == "api.secret_undecryptable"]
    assert "rotate-secrets" in line["fix"] and "NEW,OLD" in line["fix"]
    assert hook.secret not in repr(logs)
