"""The delivery options of a webhook (DESIGN.md §11) at the API: checks and reads.

``checked_options`` applies the rules a JSON Schema cannot express and returns the
changes the store takes (``dispatcher.store.webhook_options.OPTIONS``, and the
``secret`` when a ``v1a`` key pair is made); ``options_json`` is what every read
shows (never a secret member).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api.errors import invalid_field, validation_failed
from dispatcher.delivery.asymmetric import generate_key_pair
from dispatcher.delivery.client_certificate import InvalidCertificate, check_client_certificate
from dispatcher.delivery.custom_headers import header_problems
from dispatcher.delivery.endpoint_auth import SECRET_MEMBERS, auth_from
from dispatcher.delivery.http.ssrf import InvalidTarget, check_target_url
from dispatcher.settings import Settings
from dispatcher.store import webhook_store as store


async def checked_options(
    body: dict[str, Any], current: store.Webhook | None, settings: Settings
) -> dict[str, Any]:
    """The option changes of a schema-valid create or update ``body``; else a 422.

    ``current`` is the webhook being updated (None on create): an update is checked
    against the options it keeps. ``rotate_signing_key`` is read here; the caller
    leaves it out of the store changes.
    """
    auth = body.get("auth")
    has_auth = auth is not None or (
        "auth" not in body and current is not None and bool(current.auth)
    )
    headers = body.get("headers")
    if headers is None and "headers" not in body and current is not None:
        headers = current.headers  # kept: still checked against a new auth
    found = [
        {"path": f"/headers/{name}", "message": message, "keyword": "headers"}
        for name, message in header_problems(headers or {}, has_auth=has_auth)
    ]
    if auth is not None and auth["type"] == "oauth2_client_credentials":
        try:
            await check_target_url(auth["token_url"], settings)
        except InvalidTarget as exc:
            found.append(
                {"path": "/auth/token_url", "message": f"token_url: {exc}", "keyword": "target"}
            )
    if found:
        raise validation_failed(found)
    changes = {name: body[name] for name in ("headers",) if name in body}
    if "auth" in body:
        changes["auth"] = (
            None if auth is None else auth_from(auth, auth[SECRET_MEMBERS[auth["type"]]])
        )
    if "tls_client_certificate" in body:
        changes["tls_client_certificate"] = _checked_certificate(body["tls_client_certificate"])
    return changes | _signing_changes(body, current)


def _checked_certificate(pair: dict[str, str] | None) -> Any:
    if pair is None:
        return None
    try:
        return check_client_certificate(pair["certificate"], pair["private_key"], datetime.now(UTC))
    except InvalidCertificate as exc:
        raise invalid_field(
            "/tls_client_certificate", f"tls_client_certificate: {exc}", "certificate"
        ) from None


def _signing_changes(body: dict[str, Any], current: store.Webhook | None) -> dict[str, Any]:
    """A new key pair when a webhook becomes (or rotates as) ``v1a``; the secret rules."""
    was = current.signature_scheme if current is not None else None
    scheme = body.get("signature_scheme", was or "v1")
    rotate = body.get("rotate_signing_key", False)
    if scheme == "v1a":
        if "secret" in body:
            raise invalid_field(
                "/secret", "a v1a webhook has no shared secret: omit secret", "signature_scheme"
            )
        if was == "v1a" and not rotate:
            return {}
        private, public = generate_key_pair()
        return {"signature_scheme": "v1a", "public_key": public, "secret": private}
    if rotate:
        raise invalid_field(
            "/rotate_signing_key",
            "rotate_signing_key is for v1a webhooks: give a v1 webhook a new secret instead",
            "signature_scheme",
        )
    if was == "v1a":
        if "secret" not in body:
            raise invalid_field(
                "/secret", "a webhook moving to v1 needs its new shared secret", "required"
            )
        return {"signature_scheme": "v1", "public_key": None}
    return {}


def options_json(webhook: store.Webhook) -> dict[str, Any]:
    """The options as reads show them."""
    return {
        "headers": webhook.headers or {},
        "signature_scheme": webhook.signature_scheme,
        "public_key": webhook.public_key,
        "tls_client_certificate": webhook.tls_client_certificate,
        "auth": webhook.auth,
    }
