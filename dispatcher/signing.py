"""Request signing: Commenda's ``Commenda-X-Secret`` and Standard Webhooks headers.

Pure functions; the timestamp is passed in. The signing key is the secret's UTF-8
bytes, except a ``whsec_<base64>`` secret, whose key is the decoded base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

WHSEC_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key for ``secret`` (see the module docstring)."""
    if secret.startswith(WHSEC_PREFIX):
        try:
            return base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
        except binascii.Error:
            pass  # not valid base64: treat the whole string as an opaque secret
    return secret.encode()


def commenda_signature(key: bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: the value of ``Commenda-X-Secret``."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every signature header of one attempt.

    ``secrets[0]`` is the current secret; later ones are rotated-out secrets still
    valid, each adding a space-separated ``webhook-signature`` entry.
    """
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    keys = [signing_key(secret) for secret in secrets]
    return {
        "Commenda-X-Secret": commenda_signature(keys[0], body),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(key, msg_id, timestamp, body) for key in keys
        ),
    }
