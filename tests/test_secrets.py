"""Webhook secrets are encrypted at rest and survive key rotation.

Rotation rewrites every row of ``webhooks``, so those tests use a database of their
own rather than the session's shared one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from cryptography.fernet import Fernet

from dispatcher.delivery.secrets import (
    SecretBox,
    SecretKeyError,
    generate_secret,
    preview,
)
from dispatcher.store import db
from dispatcher.store.tenants import create_tenant
from dispatcher.store.webhook_store import create_webhook, reencrypt_secrets, update_webhook
from dispatcher.store.webhook_targets import load_target
from tests.conftest import TEST_SECRET_KEY, database_url_for

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"


def test_ciphertext_is_not_the_secret_and_opens_only_with_the_key() -> None:
    """encrypt() hides the secret; the same key decrypts it, another key cannot."""
    secret = generate_secret()
    box = SecretBox([Fernet.generate_key().decode()])
    token = box.encrypt(secret)
    assert secret.encode() not in token
    assert box.decrypt(token) == secret
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        SecretBox([Fernet.generate_key().decode()]).decrypt(token)


def test_ciphertexts_are_randomised() -> None:
    """Encrypting the same secret twice gives different tokens (no equality leak)."""
    box = SecretBox([Fernet.generate_key().decode()])
    assert box.encrypt("same") != box.encrypt("same")


def test_tampered_ciphertext_is_refused() -> None:
    """The encryption is authenticated: a flipped byte fails to decrypt."""
    box = SecretBox([Fernet.generate_key().decode()])
    token = bytearray(box.encrypt("secret"))
    token[-5] ^= 0x01
    with pytest.raises(SecretKeyError):
        box.decrypt(bytes(token))


def test_new_key_first_still_opens_old_tokens() -> None:
    """With keys [new, old] old tokens decrypt, and new tokens use the new key."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_token = SecretBox([old]).encrypt("s1")
    both = SecretBox.from_setting(f"{new}, {old}")
    assert both.decrypt(old_token) == "s1"
    assert SecretBox([new]).decrypt(both.encrypt("s2")) == "s2"
    assert SecretBox([new]).decrypt(both.rotate(old_token)) == "s1"


# The last: a Fernet key with its tail cut off (fixed, so every xdist worker collects it).
@pytest.mark.parametrize(
    "setting", ["not-a-key", "short,,", "f8OeHH8TDh8bJ-GYtjKH7AOoAq0tG9fdQoUloTmv"]
)
def test_malformed_key_setting_is_explained(setting: str) -> None:
    """A malformed HOOKLANE_SECRET_KEY fails with a message naming it."""
    with pytest.raises(SecretKeyError, match="HOOKLANE_SECRET_KEY"):
        SecretBox.from_setting(setting)


def test_preview_shows_only_the_tail() -> None:
    """The preview shown after creation reveals only the last four characters."""
    secret = generate_secret()
    assert preview(secret) == "…" + secret[-4:]
    assert secret[:-4] not in preview(secret)


async def test_stored_secret_is_ciphertext(pool: asyncpg.Pool, tenant) -> None:
    """The webhooks row holds a Fernet token, never the plaintext, and it decrypts."""
    box = SecretBox.from_setting(TEST_SECRET_KEY)
    secret = generate_secret()
    webhook = await create_webhook(
        pool,
        box,
        tenant_id=tenant.id,
        url="https://hooks.example.com/",
        topics=[TOPIC],
        secret=secret,
    )
    row = await pool.fetchrow("SELECT * FROM webhooks WHERE id = $1", uuid.UUID(webhook.id))
    assert row is not None
    stored = bytes(row["secret_ciphertext"])
    assert secret.encode() not in stored
    assert all(secret not in str(value) for value in row.values())
    assert box.decrypt(stored) == secret
    with pytest.raises(SecretKeyError):
        SecretBox([Fernet.generate_key().decode()]).decrypt(stored)


@pytest.fixture
async def rotation_db() -> AsyncIterator[str]:
    url = database_url_for(f"hooklane_rot_{uuid.uuid4().hex[:10]}")
    await db.migrate(url)
    yield url
    await db.drop_database(url)


async def _seed(url: str, box: SecretBox, count: int) -> list[tuple[str, str, str | None]]:
    """``count`` webhooks (every other one with a rotated, still-valid previous secret)."""
    conn = await asyncpg.connect(url)
    seeded: list[tuple[str, str, str | None]] = []
    try:
        tenant_id, _ = await create_tenant(conn, "rotation")
        for index in range(count):
            first = generate_secret()
            webhook = await create_webhook(
                conn,
                box,
                tenant_id=tenant_id,
                url=f"https://h{index}.example.com/",
                topics=[TOPIC],
                secret=first,
            )
            if index % 2:
                second = generate_secret()
                await update_webhook(conn, box, tenant_id, webhook.id, {"secret": second})
                seeded.append((webhook.id, second, first))
            else:
                seeded.append((webhook.id, first, None))
    finally:
        await conn.close()
    return seeded


async def _assert_open_with(url: str, box: SecretBox, seeded) -> None:
    conn = await asyncpg.connect(url)
    try:
        for webhook_id, current, previous in seeded:
            target = await load_target(conn, box, webhook_id)
            assert target is not None
            expected = (current,) if previous is None else (current, previous)
            assert target.secrets == expected
    finally:
        await conn.close()


async def test_rotation_reencrypts_every_secret_under_the_first_key(rotation_db: str) -> None:
    """After re-encryption the new key alone opens current and previous secrets."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    seeded = await _seed(rotation_db, SecretBox([old]), 5)
    conn = await asyncpg.connect(rotation_db)
    try:
        count = await reencrypt_secrets(conn, SecretBox([new, old]), batch_size=2)
    finally:
        await conn.close()
    assert count == 5
    await _assert_open_with(rotation_db, SecretBox([new]), seeded)
    with pytest.raises(SecretKeyError):
        await _assert_open_with(rotation_db, SecretBox([old]), seeded)


async def test_rotation_without_the_old_key_stops_and_names_the_webhook(rotation_db: str) -> None:
    """If no configured key opens a secret, rotation fails loudly instead of losing it."""
    seeded = await _seed(rotation_db, SecretBox([Fernet.generate_key().decode()]), 1)
    conn = await asyncpg.connect(rotation_db)
    try:
        with pytest.raises(SecretKeyError, match=seeded[0][0]):
            await reencrypt_secrets(conn, SecretBox([Fernet.generate_key().decode()]))
    finally:
        await conn.close()


async def test_rotate_secrets_command(rotation_db: str) -> None:
    """`hooklane rotate-secrets` re-encrypts under the first key and reports the count."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    seeded = await _seed(rotation_db, SecretBox([old]), 3)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOOKLANE_")},
        "HOOKLANE_DATABASE_URL": rotation_db,
        "HOOKLANE_SECRET_KEY": f"{new},{old}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.cli",
        "rotate-secrets",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert "re-encrypted 3 webhook secret(s)" in stdout.decode()
    await _assert_open_with(rotation_db, SecretBox([new]), seeded)


@pytest.mark.parametrize("setting", [None, "", "  "])
def test_missing_key_is_refused_not_guessed(setting: str | None) -> None:
    """No HOOKLANE_SECRET_KEY: an error saying how to make one, never a key from the cwd."""
    with pytest.raises(SecretKeyError, match="hooklane secret-key"):
        SecretBox.from_setting(setting)
