"""``signature_scheme: "v1a"``: Ed25519 signatures receivers verify with the public key alone."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dispatcher.delivery.asymmetric import generate_key_pair, public_key, sign_v1a_headers
from dispatcher.delivery.signing import sign_headers
from dispatcher.settings import Settings
from tests.support.api import (
    Client,
    api_client,
    assert_matches,
    webhook_body,
)
from tests.support.receiver import Received, Receiver

BODY = b'{"id":"evt_1","data":{"amount":42}}'


def verifies(whpk: str, headers: dict[str, str], body: bytes) -> bool:
    """A receiver's check, from the spec: any ``v1a`` signature valid under ``whpk``."""
    assert whpk.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk.removeprefix("whpk_")))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), signed)
        except InvalidSignature:
            continue
        return True
    return False


def test_a_v1a_signature_verifies_with_the_public_key_alone_and_not_with_another() -> None:
    """Signed as ``v1a,<base64>`` over id.timestamp.body; no Commenda-X-Secret; other keys fail."""
    private, public = generate_key_pair()
    headers = sign_v1a_headers([private], "msg_1", 1614265330, BODY)
    assert headers["webhook-signature"].startswith("v1a,")
    assert "Commenda-X-Secret" not in headers
    assert len(base64.b64decode(public.removeprefix("whpk_"))) == 32
    assert public_key(private) == public
    assert verifies(public, headers, BODY)
    assert not verifies(generate_key_pair()[1], headers, BODY)
    assert not verifies(public, headers, BODY + b" ")
    assert not verifies(public, {**headers, "webhook-timestamp": "1614265331"}, BODY)


def test_during_rotation_both_keys_sign() -> None:
    """The new key and the rotated-out one each give a space-separated signature."""
    (new, new_public), (old, old_public) = generate_key_pair(), generate_key_pair()
    headers = sign_v1a_headers([new, old], "msg_2", 1614265330, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verifies(new_public, headers, BODY)
    assert verifies(old_public, headers, BODY)


def test_a_scheme_change_signs_v1_and_v1a_during_the_overlap() -> None:
    """A v1 secret still in its overlap keeps its v1 signature next to the new v1a one."""
    private, public = generate_key_pair()
    secret = "a-given-secret-0123456789"
    headers = sign_v1a_headers([private, secret], "msg_3", 1614265330, BODY)
    v1 = sign_headers([secret], "msg_3", 1614265330, BODY)["webhook-signature"]
    assert headers["webhook-signature"].split(" ")[1] == v1
    assert verifies(public, headers, BODY)
    assert "Commenda-X-Secret" not in headers


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with api_client(settings) as running:
        yield running


async def _trigger(client: Client, tenant: Any, webhook_id: str) -> None:
    response = await client.post(f"/webhooks/test/trigger/{webhook_id}", headers=tenant.headers)
    assert (await response.json())["delivered"] is True


def _last(requests: list[Received]) -> tuple[dict[str, str], bytes]:
    last = requests[-1]
    return {k.lower(): v for k, v in last.headers.items()}, last.body


async def test_a_v1a_webhook_delivers_verifiable_requests_and_rotates(client, tenant) -> None:
    """Create shows whpk_ (no secret); deliveries verify with it; a rotation signs with both."""
    async with Receiver() as recv:
        response = await client.post(
            "/webhooks", json=webhook_body(recv.url, signature_scheme="v1a"), headers=tenant.headers
        )
        assert response.status == 201
        created = await response.json()
        assert_matches("WebhookCreated", created)
        assert "secret" not in created
        assert created["signature_scheme"] == "v1a"
        first_key = created["public_key"]
        assert created["secret_preview"] == "…" + first_key[-4:]
        await _trigger(client, tenant, created["id"])
        headers, body = _last(recv.requests)
        assert "commenda-x-secret" not in headers
        assert verifies(first_key, headers, body)
        assert not verifies(generate_key_pair()[1], headers, body)

        path = f"/webhooks/{created['id']}"
        rotated = await client.post(path, json={"rotate_signing_key": True}, headers=tenant.headers)
        assert rotated.status == 200
        second_key = (await rotated.json())["public_key"]
        assert second_key != first_key
        read = await (await client.get(path, headers=tenant.headers)).json()
        assert read["public_key"] == second_key
        await _trigger(client, tenant, created["id"])
        headers, body = _last(recv.requests)
        assert verifies(second_key, headers, body)
        assert verifies(first_key, headers, body)  # the overlap


async def test_v1a_secret_rules(client, tenant) -> None:
    """No secret on a v1a webhook, no whsk_ secret on a v1 one, no key rotation for v1."""
    url = "http://127.0.0.1:9/h"
    given = await client.post(
        "/webhooks",
        json=webhook_body(url, signature_scheme="v1a", secret="a-given-secret-0123456789"),
        headers=tenant.headers,
    )
    assert given.status == 422
    assert (await given.json())["error"]["details"][0]["path"] == "/secret"
    prefixed = await client.post(
        "/webhooks", json=webhook_body(url, secret="whsk_" + "A" * 43 + "="), headers=tenant.headers
    )
    assert prefixed.status == 422
    v1 = await (
        await client.post("/webhooks", json=webhook_body(url), headers=tenant.headers)
    ).json()
    path = f"/webhooks/{v1['id']}"
    refused = await client.post(path, json={"rotate_signing_key": True}, headers=tenant.headers)
    assert refused.status == 422
    moved = await client.post(path, json={"signature_scheme": "v1a"}, headers=tenant.headers)
    assert (await moved.json())["public_key"].startswith("whpk_")
    back = await client.post(path, json={"signature_scheme": "v1"}, headers=tenant.headers)
    assert back.status == 422  # a v1 webhook needs its new shared secret
    back = await client.post(
        path,
        json={"signature_scheme": "v1", "secret": "another-secret-0123456789"},
        headers=tenant.headers,
    )
    assert (await back.json())["public_key"] is None


async def test_switching_to_v1a_keeps_the_v1_signature_for_the_overlap(client, tenant) -> None:
    """Receivers moving to v1a see both the old HMAC signature and the new Ed25519 one."""
    async with Receiver() as recv:
        secret = "a-given-secret-0123456789"
        created = await (
            await client.post(
                "/webhooks", json=webhook_body(recv.url, secret=secret), headers=tenant.headers
            )
        ).json()
        moved = await client.post(
            f"/webhooks/{created['id']}", json={"signature_scheme": "v1a"}, headers=tenant.headers
        )
        whpk = (await moved.json())["public_key"]
        await _trigger(client, tenant, created["id"])
    headers, body = _last(recv.requests)
    v1 = sign_headers([secret], headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    assert v1["webhook-signature"] in headers["webhook-signature"].split(" ")
    assert verifies(whpk, headers, body)


async def test_the_portal_shows_the_public_key_and_rotates_the_pair(settings, tenant) -> None:
    """The webhook page shows whpk_ (never a secret); Rotate makes a new pair, shown there."""
    from tests.support.portal import portal_client, sign_in

    async with portal_client(settings) as client:
        csrf = await sign_in(client, tenant)
        body = webhook_body("https://example.com/a", signature_scheme="v1a", headers={"X-A": "b"})
        created = await (await client.post("/webhooks", json=body, headers=tenant.headers)).json()
        page = await (await client.get(f"/portal/webhooks/{created['id']}")).text()
        assert created["public_key"] in page
        assert "X-A: b" in page
        rotated = await client.post(
            f"/portal/webhooks/{created['id']}/rotate", data={"csrf_token": csrf}
        )
        assert rotated.status == 200
        read = await (await client.get(f"/webhooks/{created['id']}", headers=tenant.headers)).json()
        assert read["public_key"] != created["public_key"]
        assert read["public_key"] in await rotated.text()
        assert "whsk_" not in await rotated.text()
