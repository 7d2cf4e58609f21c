"""``tls_client_certificate``: checked at registration, presented in every TLS handshake."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher.bench.certificates import pem_key
from dispatcher.delivery.client_certificate import InvalidCertificate, check_client_certificate
from dispatcher.delivery.failures import DeliveryError
from dispatcher.delivery.http.lean import HttpSender
from dispatcher.delivery.http.sender import AiohttpSender, ClosableSender
from dispatcher.settings import Settings
from tests.support.api import Client, api_client, webhook_body
from tests.support.client_tls import ClientCA, MutualTLS, mtls_receiver

LOCAL = Settings(allow_private_targets=True, delivery_timeout_s=5.0)
NOW = datetime.datetime.now(datetime.UTC)
BODY = b'{"id":"evt_1"}'


@pytest.fixture(scope="module")
def ca() -> ClientCA:
    return ClientCA.make()


def test_a_matching_unexpired_pair_is_accepted_and_summarised(ca: ClientCA) -> None:
    """Subject, expiry and SHA-256 fingerprint are what reads show."""
    cert, key = ca.issue("sender.example")
    checked = check_client_certificate(cert, key, NOW)
    assert checked.subject == "CN=sender.example"
    assert checked.not_after > NOW
    assert len(checked.fingerprint_sha256) == 64
    assert set(checked.summary()) == {"subject", "not_after", "fingerprint_sha256"}
    assert key not in repr(checked)


def _encrypted(key_pem: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("mismatch", "does not match"),
        ("expired", "expired"),
        ("garbage certificate", "not a PEM X.509"),
        ("garbage key", "not a PEM private key"),
        ("encrypted key", "must not be encrypted"),
    ],
)
def test_a_pair_that_cannot_be_presented_is_refused(ca: ClientCA, case: str, says: str) -> None:
    """Each reason is named."""
    cert, key = ca.issue(days=-1 if case == "expired" else 1)
    if case == "mismatch":
        key = pem_key(ec.generate_private_key(ec.SECP256R1()))
    elif case == "garbage certificate":
        cert = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    elif case == "garbage key":
        key = "not a key"
    elif case == "encrypted key":
        key = _encrypted(key)
    with pytest.raises(InvalidCertificate, match=says):
        check_client_certificate(cert, key, NOW)


@pytest.fixture
def tls(tmp_path: Path) -> MutualTLS:
    return MutualTLS.make(tmp_path)


def _sender(kind: str, tls: MutualTLS) -> ClosableSender:
    if kind == "fast":
        return HttpSender(LOCAL, tls_factory=tls.trust)
    return AiohttpSender(LOCAL, tls_factory=tls.trust)


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_a_receiver_requiring_client_certificates_accepts_only_the_presented_one(
    kind: str, tls: MutualTLS
) -> None:
    """With the certificate: 200. Without it, or with another CA's, on the same sender
    right after (so no authenticated connection is reused): refused, nothing received."""
    good = check_client_certificate(*tls.clients.issue(), NOW)
    foreign = check_client_certificate(*ClientCA.make("Someone else").issue(), NOW)
    sender = _sender(kind, tls)
    try:
        async with mtls_receiver(tls) as recv:
            response = await sender.send(recv.url, BODY, {}, good)
            assert response.status == 200
            assert len(recv.requests) == 1
            with pytest.raises(DeliveryError):
                await sender.send(recv.url, BODY, {})
            with pytest.raises(DeliveryError):
                await sender.send(recv.url, BODY, {}, foreign)
            again = await sender.send(recv.url, BODY, {}, good)
            assert again.status == 200
            assert len(recv.requests) == 2
    finally:
        await sender.close()


@pytest.fixture
async def client(settings: Settings, tls: MutualTLS, monkeypatch) -> AsyncIterator[Client]:
    # The app's sender trusts what OpenSSL's default paths trust: here, the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.server.ca))
    async with api_client(settings) as running:
        yield running


async def test_registration_checks_and_read_shows_only_the_summary(client, tenant, tls) -> None:
    """A mismatched or expired pair is a 422; a good one reads back without its PEMs."""
    cert, key = tls.clients.issue("acme-sender")
    _, other_key = tls.clients.issue()
    expired = tls.clients.issue(days=-1)
    url = "https://127.0.0.1:9/hook"
    for pair, says in (((cert, other_key), "does not match"), (expired, "expired")):
        body = webhook_body(
            url, tls_client_certificate={"certificate": pair[0], "private_key": pair[1]}
        )
        refused = await client.post("/webhooks", json=body, headers=tenant.headers)
        assert refused.status == 422
        error = (await refused.json())["error"]
        assert error["details"][0]["path"] == "/tls_client_certificate"
        assert says in error["message"]
    body = webhook_body(url, tls_client_certificate={"certificate": cert, "private_key": key})
    created = await client.post("/webhooks", json=body, headers=tenant.headers)
    assert created.status == 201
    webhook_id = (await created.json())["id"]
    read = await client.get(f"/webhooks/{webhook_id}", headers=tenant.headers)
    text = await read.text()
    shown = (await read.json())["tls_client_certificate"]
    assert shown["subject"] == "CN=acme-sender"
    assert (
        shown["fingerprint_sha256"] == check_client_certificate(cert, key, NOW).fingerprint_sha256
    )
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text


async def test_test_trigger_presents_the_certificate_and_a_change_applies(
    client, tenant, tls
) -> None:
    """Delivered with the certificate; refused with another CA's, and with none."""
    cert, key = tls.clients.issue()
    async with mtls_receiver(tls) as recv:
        pair = {"certificate": cert, "private_key": key}
        body = webhook_body(recv.url, tls_client_certificate=pair)
        webhook_id = (
            await (await client.post("/webhooks", json=body, headers=tenant.headers)).json()
        )["id"]
        trigger = f"/webhooks/test/trigger/{webhook_id}"
        outcome = await (await client.post(trigger, headers=tenant.headers)).json()
        assert outcome["delivered"] is True, outcome

        foreign_cert, foreign_key = ClientCA.make("Someone else").issue()
        foreign = {"certificate": foreign_cert, "private_key": foreign_key}
        path = f"/webhooks/{webhook_id}"
        await client.post(path, json={"tls_client_certificate": foreign}, headers=tenant.headers)
        outcome = await (await client.post(trigger, headers=tenant.headers)).json()
        assert outcome["delivered"] is False

        await client.post(path, json={"tls_client_certificate": None}, headers=tenant.headers)
        read = await (await client.get(path, headers=tenant.headers)).json()
        assert read["tls_client_certificate"] is None
        outcome = await (await client.post(trigger, headers=tenant.headers)).json()
        assert outcome["delivered"] is False
        assert len(recv.requests) == 1
