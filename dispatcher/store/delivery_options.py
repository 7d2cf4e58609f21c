"""A webhook's delivery options (DESIGN.md §11) in the ``webhooks`` table (migration 011).

The API hands over options by their API names, already checked; ``option_values``
turns them into column values (secret members encrypted with the ``SecretBox``), and
``target_options`` turns a row back into the ``WebhookTarget`` fields the deliverer
uses (secret members decrypted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dispatcher.delivery.secrets import SecretBox

if TYPE_CHECKING:
    import asyncpg

# Options a create or a partial update may carry (API names).
OPTIONS = frozenset({"headers", "signature_scheme", "public_key"})
# What reads show (``Webhook`` fields) and what the deliverer needs (``WebhookTarget``).
READ_COLUMNS = "headers, signature_scheme, public_key"
TARGET_COLUMNS = "headers"
# Encrypted columns beside the secret's, re-encrypted by ``hooklane rotate-secrets``.
ENCRYPTED: tuple[str, ...] = ()


def option_values(box: SecretBox, options: Mapping[str, Any]) -> dict[str, Any]:
    """Column -> value for the options present in ``options`` (None clears one)."""
    values: dict[str, Any] = {}
    if "headers" in options:
        values["headers"] = options["headers"] or None
    for plain in ("signature_scheme", "public_key"):
        if plain in options:
            values[plain] = options[plain]
    return values


def target_options(row: asyncpg.Record, box: SecretBox) -> dict[str, Any]:
    """The ``WebhookTarget`` keyword arguments of a row's options, secrets decrypted."""
    headers = row["headers"]
    return {"headers": tuple(headers.items()) if headers else ()}
