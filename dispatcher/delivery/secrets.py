"""Webhook secrets: generation, preview, and authenticated encryption at rest.

Encryption uses ``cryptography``'s MultiFernet (AES-128-CBC + HMAC-SHA256, with key
rotation): ``HOOKLANE_SECRET_KEY`` is a comma-separated list of Fernet keys; the first
encrypts, every key decrypts, so an operator rotates by prepending a new key and
running ``hooklane rotate-secrets`` (re-encrypts) before dropping the old key.

The key is never guessed from the working directory: processes started on their own
refuse to start without ``HOOKLANE_SECRET_KEY`` (``MISSING_KEY``); only ``hooklane up``
(development) makes a key file with ``dev_key`` and passes the key to its children.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets as _random
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from dispatcher.delivery.asymmetric import is_signing_key, public_key
from dispatcher.delivery.signing import WHSEC_PREFIX

MISSING_KEY = (
    "HOOKLANE_SECRET_KEY is not set: make one with `hooklane secret-key` and give the same"
    " key to every Hooklane process (`hooklane up` creates a development key)"
)


# What an operator does about a secret no configured key opens (logged beside it).
UNDECRYPTABLE_FIX = (
    "HOOKLANE_SECRET_KEY lacks the key this secret was encrypted with: give every process"
    " NEW,OLD (new key first) until `hooklane rotate-secrets` has run, then drop OLD"
)


class SecretKeyError(ValueError):
    """HOOKLANE_SECRET_KEY is missing or malformed, or a stored secret cannot be decrypted."""


def generate_secret() -> str:
    """A new Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return WHSEC_PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


def preview(secret: str) -> str:
    """What may be shown of a secret after creation: its last four characters.

    Of a ``v1a`` private key, nothing: the last characters of its public key.
    """
    return "…" + (public_key(secret) if is_signing_key(secret) else secret)[-4:]


class SecretBox:
    """Encrypts and decrypts webhook secrets with the configured keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError("HOOKLANE_SECRET_KEY: at least one key is needed")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                "HOOKLANE_SECRET_KEY: each key must be 32 url-safe base64-encoded bytes "
                "(make one with `hooklane secret-key`)"
            ) from exc

    @classmethod
    def from_setting(cls, setting: str | None) -> SecretBox:
        """From ``HOOKLANE_SECRET_KEY``; SecretKeyError (MISSING_KEY) when it is unset."""
        if not setting or not setting.strip():
            raise SecretKeyError(MISSING_KEY)
        return cls([key.strip() for key in setting.split(",") if key.strip()])

    def encrypt(self, secret: str) -> bytes:
        """The ciphertext (a Fernet token) of ``secret``."""
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        """The plaintext of a stored secret; SecretKeyError when no key opens it."""
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken:
            raise SecretKeyError(
                f"a stored secret cannot be decrypted with any key ({UNDECRYPTABLE_FIX})"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt ``token`` under the first (newest) key."""
        return self._fernet.rotate(bytes(token))


def new_key() -> str:
    """A fresh Fernet key for HOOKLANE_SECRET_KEY."""
    return Fernet.generate_key().decode()


def dev_key(path: Path) -> str:
    """The development key kept in ``path``, created (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another `hooklane up` made it first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(new_key())
    return path.read_text().strip()
