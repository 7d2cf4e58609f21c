"""Standard Webhooks ``v1a`` signing (Ed25519; DESIGN.md §11 ``signature_scheme``).

Pure functions; the timestamp is passed in. A private key is kept as
``whsk_<base64 of the 32-byte seed>`` (stored encrypted, like a ``v1`` secret, in the
same columns, so rotation and re-encryption work alike); its public key is shown as
``whpk_<base64 of the 32-byte raw public key>``. Receivers verify with the public key
alone: there is no shared secret, so no ``Commenda-X-Secret`` either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dispatcher.delivery.signing import commenda_signature, signing_key, standard_signature

WHSK_PREFIX = "whsk_"
WHPK_PREFIX = "whpk_"


def is_signing_key(secret: str) -> bool:
    """Whether ``secret`` is a ``v1a`` private key rather than a ``v1`` shared secret."""
    return secret.startswith(WHSK_PREFIX)


def generate_key_pair() -> tuple[str, str]:
    """A new ``(whsk_…, whpk_…)`` pair."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    private = WHSK_PREFIX + base64.b64encode(seed).decode()
    return private, public_key(private)


@lru_cache(maxsize=4096)
def _private_key(secret: str) -> Ed25519PrivateKey:
    try:
        seed = base64.b64decode(secret[len(WHSK_PREFIX) :], validate=True)
        return Ed25519PrivateKey.from_private_bytes(seed)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a whsk_ Ed25519 private key") from exc


def public_key(secret: str) -> str:
    """The ``whpk_…`` public key of private key ``secret``."""
    raw = _private_key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return WHPK_PREFIX + base64.b64encode(raw).decode()


def sign_v1a_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every signature header of one attempt of a webhook with a ``v1a`` key.

    ``secrets[0]`` signs; later entries are rotated-out keys still in their overlap,
    each adding a space-separated signature. A ``v1`` secret among them (the webhook
    changed scheme during the overlap) signs ``v1`` as before, and gives
    ``Commenda-X-Secret`` only when it is the current one.
    """
    if not secrets:
        raise ValueError("at least one key is needed to sign")
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    signatures = []
    for secret in secrets:
        if is_signing_key(secret):
            signature = _private_key(secret).sign(signed)
            signatures.append("v1a," + binascii.b2a_base64(signature, newline=False).decode())
        else:
            signatures.append(standard_signature(signing_key(secret), msg_id, timestamp, body))
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }
    if not is_signing_key(secrets[0]):
        headers = {
            "Commenda-X-Secret": commenda_signature(signing_key(secrets[0]), body),
            **headers,
        }
    return headers
