"""Delivery options at rest: secret members encrypted, decrypted into the target,
re-encrypted by ``hooklane rotate-secrets`` like the secrets."""

from __future__ import annotations

import datetime

import pytest
from cryptography.fernet import Fernet

from dispatcher.delivery.asymmetric import generate_key_pair
from dispatcher.delivery.client_certificate import check_client_certificate
from dispatcher.delivery.endpoint_auth import OAuth2ClientCredentials
from dispatcher.delivery.secrets import SecretBox, SecretKeyError
from dispatcher.store import db
from dispatcher.store.tenants import create_tenant
from dispatcher.store.webhook_store import create_webhook, reencrypt_secrets
from dispatcher.store.webhook_targets import load_target
from tests.support.client_tls import ClientCA
from tests.test_secrets import rotation_db  # noqa: F401  (fixture)

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"


async def test_option_secrets_are_encrypted_loaded_and_reencrypted(rotation_db: str) -> None:  # noqa: F811
    """The target gets them decrypted; after rotation only the new key opens them."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    cert, key = ClientCA.make().issue()
    certificate = check_client_certificate(cert, key, datetime.datetime.now(datetime.UTC))
    auth = OAuth2ClientCredentials("https://id.example/token", "client", "client-secret-xyz", "s")
    private, public = generate_key_pair()
    pool = await db.create_pool(rotation_db)
    try:
        async with pool.acquire() as conn:
            tenant_id, _ = await create_tenant(conn, "options")
        webhook = await create_webhook(
            pool,
            SecretBox([old]),
            tenant_id=tenant_id,
            url="https://h.example.com/",
            topics=[TOPIC],
            secret=private,
            delivery_options={
                "headers": {"X-A": "b"},
                "signature_scheme": "v1a",
                "public_key": public,
                "tls_client_certificate": certificate,
                "auth": auth,
            },
        )
        assert webhook.auth == auth.shown()
        assert webhook.tls_client_certificate == certificate.summary()
        row = await pool.fetchval("SELECT w::text FROM webhooks w WHERE id = $1::uuid", webhook.id)
        for secret in ("client-secret-xyz", private, key.splitlines()[1]):
            assert secret not in row

        async with pool.acquire() as conn:
            assert await reencrypt_secrets(conn, SecretBox([new, old])) == 1
        target = await load_target(pool, SecretBox([new]), webhook.id)
        assert target is not None
        assert target.auth == auth and target.auth.client_secret == "client-secret-xyz"
        assert target.client_certificate == certificate
        assert target.secrets == (private,) and target.asymmetric
        assert target.headers == (("X-A", "b"),)
        with pytest.raises(SecretKeyError):
            await load_target(pool, SecretBox([old]), webhook.id)
    finally:
        await pool.close()
