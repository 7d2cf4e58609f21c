"""A webhook's delivery options (DESIGN.md §11) in the ``webhooks`` table (migration 011).

The API hands over options by their API names, already checked; ``option_values``
turns them into column values (secret members encrypted with the ``SecretBox``), and
``target_options`` turns a row back into the ``WebhookTarget`` fields the deliverer
uses (secret members decrypted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dispatcher.delivery.client_certificate import ClientCertificate
from dispatcher.delivery.endpoint_auth import EndpointAuth, auth_from
from dispatcher.delivery.secrets import SecretBox

if TYPE_CHECKING:
    import asyncpg

# Options a create or a partial update may carry (API names).
OPTIONS = frozenset({"headers", "signature_scheme", "public_key", "tls_client_certificate", "auth"})
# What reads show (``Webhook`` fields) and what the deliverer needs (``WebhookTarget``).
READ_COLUMNS = "headers, signature_scheme, public_key, tls_client_certificate, auth"
TARGET_COLUMNS = "headers, tls_client_certificate, tls_client_ciphertext, auth, auth_ciphertext"
# Encrypted columns beside the secret's, re-encrypted by ``hooklane rotate-secrets``.
ENCRYPTED = ("tls_client_ciphertext", "auth_ciphertext")


def option_values(box: SecretBox, options: Mapping[str, Any]) -> dict[str, Any]:
    """Column -> value for the options present in ``options`` (None clears one)."""
    values: dict[str, Any] = {}
    if "headers" in options:
        values["headers"] = options["headers"] or None
    for plain in ("signature_scheme", "public_key"):
        if plain in options:
            values[plain] = options[plain]
    if "tls_client_certificate" in options:
        certificate: ClientCertificate | None = options["tls_client_certificate"]
        values["tls_client_certificate"] = certificate and certificate.summary()
        values["tls_client_ciphertext"] = certificate and box.encrypt(certificate.bundle())
    if "auth" in options:
        auth: EndpointAuth | None = options["auth"]
        values["auth"] = auth and auth.shown()
        values["auth_ciphertext"] = auth and box.encrypt(auth.secret)
    return values


def target_options(row: asyncpg.Record, box: SecretBox) -> dict[str, Any]:
    """The ``WebhookTarget`` keyword arguments of a row's options, secrets decrypted."""
    headers = row["headers"]
    certificate = None
    if row["tls_client_ciphertext"] is not None:
        bundle = box.decrypt(row["tls_client_ciphertext"])
        certificate = ClientCertificate.from_bundle(bundle, row["tls_client_certificate"])
    auth = None
    if row["auth_ciphertext"] is not None:
        auth = auth_from(row["auth"], box.decrypt(row["auth_ciphertext"]))
    return {
        "headers": tuple(headers.items()) if headers else (),
        "client_certificate": certificate,
        "auth": auth,
    }
