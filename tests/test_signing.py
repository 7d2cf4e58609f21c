"""Our signature headers verify with the Standard Webhooks reference library.

The library is an independent implementation of the spec: if it accepts what
``sign_headers`` produces, any receiver's Standard Webhooks library will too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher.delivery.secrets import generate_secret
from dispatcher.delivery.signing import sign_headers, signing_key, standard_signature

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRETS = [
    SPEC_SECRET,
    "whsec_" + base64.b64encode(b"\x00" * 32).decode(),
    "a-plain-shared-secret",  # Commenda-style: the UTF-8 bytes are the key
    "pässwörd with spaces",
    "whsec_not base64!",  # looks like whsec_ but is not base64: used as raw bytes
]


def library_for(secret: str) -> Webhook:
    """The reference verifier configured with the same key we sign with."""
    if secret.startswith("whsec_") and signing_key(secret) != secret.encode():
        return Webhook(secret)
    return Webhook(secret.encode())


def test_spec_known_answer_vector() -> None:
    """The Standard Webhooks spec's example signs to the published signature."""
    headers = sign_headers([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert headers["webhook-signature"] == SPEC_SIGNATURE
    assert headers["webhook-id"] == SPEC_ID
    assert headers["webhook-timestamp"] == str(SPEC_TIMESTAMP)


def test_library_signs_the_spec_vector_like_us() -> None:
    """The reference library and our signer agree on the spec's vector."""
    when = datetime.fromtimestamp(SPEC_TIMESTAMP, tz=UTC)
    theirs = Webhook(SPEC_SECRET).sign(SPEC_ID, when, SPEC_BODY.decode())
    ours = standard_signature(signing_key(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert ours == theirs == SPEC_SIGNATURE


@pytest.mark.parametrize("secret", SECRETS)
def test_library_verifies_our_headers(secret: str) -> None:
    """For whsec_ and raw secrets, the library accepts our webhook-* headers."""
    body = b'{"id":"e1","topic":"T","data":{"a":1}}'
    headers = sign_headers([secret], "evt_1", int(time.time()), body)
    library_for(secret).verify(body, headers, json_parse=False)


@pytest.mark.parametrize("secret", SECRETS)
def test_commenda_header_is_hex_hmac_of_the_body(secret: str) -> None:
    """Commenda-X-Secret is the hex HMAC-SHA256 of the raw body with the signing key."""
    body = b'{"hello":"world"}'
    headers = sign_headers([secret], "evt_1", 1700000000, body)
    expected = hmac.new(signing_key(secret), body, hashlib.sha256).hexdigest()
    assert headers["Commenda-X-Secret"] == expected


def test_tampered_body_fails_verification() -> None:
    """A changed body no longer verifies (the check is not vacuous)."""
    headers = sign_headers([SPEC_SECRET], "evt_1", int(time.time()), b'{"amount":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify(b'{"amount":2}', headers, json_parse=False)


def test_rotation_sends_two_signatures_each_verifies() -> None:
    """During rotation both the new and the old secret verify; a stranger's does not."""
    new, old, stranger = generate_secret(), generate_secret(), generate_secret()
    body = b'{"rotating":true}'
    headers = sign_headers([new, old], "evt_rot", int(time.time()), body)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(signature.startswith("v1,") for signature in signatures)
    Webhook(new).verify(body, headers, json_parse=False)
    Webhook(old).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers, json_parse=False)
    # Commenda's single header is signed with the current secret.
    assert (
        headers["Commenda-X-Secret"] == hmac.new(signing_key(new), body, hashlib.sha256).hexdigest()
    )


def test_signing_needs_a_secret() -> None:
    """Signing with no secret is a programming error, not an unsigned request."""
    with pytest.raises(ValueError, match="secret"):
        sign_headers([], "evt", 1, b"{}")


@settings(max_examples=200, deadline=None)
@given(
    body=st.text(max_size=2000).map(str.encode),
    msg_id=st.text(min_size=1, max_size=80).filter(lambda s: s.strip() == s and " " not in s),
    skew=st.integers(min_value=-240, max_value=240),
    secret=st.one_of(
        st.binary(min_size=1, max_size=64).map(
            lambda raw: "whsec_" + base64.b64encode(raw).decode()
        ),
        st.text(min_size=1, max_size=64).filter(lambda s: not s.startswith("whsec_")),
    ),
)
def test_library_verifies_any_message(body: bytes, msg_id: str, skew: int, secret: str) -> None:
    """For any body, id, in-tolerance timestamp and secret, the library verifies us."""
    headers = sign_headers([secret], msg_id, int(time.time()) + skew, body)
    library_for(secret).verify(body, headers, json_parse=False)
