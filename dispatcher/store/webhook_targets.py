"""A webhook as the deliverer sees it (``WebhookTarget``): any tenant, secrets decrypted.

``load_target`` reads one; ``load_targets`` reads many in one query and skips the
decryption of rows the caller already holds (``VersionedTarget``), for the deliverer's
target cache (``dispatcher.deliverer.target_cache``). Rows of the ``webhooks`` table;
its tenant-scoped reads and writes are ``dispatcher.store.webhook_store``'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatcher.delivery.asymmetric import is_signing_key
from dispatcher.delivery.attempt import WebhookTarget
from dispatcher.delivery.secrets import SecretBox
from dispatcher.ids import parse_uuid, valid_uuids
from dispatcher.store import webhook_options as options
from dispatcher.subscription.rate_limit import rate_of
from dispatcher.subscription.retry_override import stored_override

if TYPE_CHECKING:
    import asyncpg

    from dispatcher.store.db import Executor


async def load_target(executor: Executor, box: SecretBox, webhook_id: str) -> WebhookTarget | None:
    """The delivery view of a webhook (any tenant, any state), secrets decrypted.

    ``secrets`` holds the current secret, then the previous one while its rotation
    grace period lasts.
    """
    try:
        key = parse_uuid(webhook_id)
    except ValueError:
        return None
    row = await executor.fetchrow(
        "SELECT id::text AS id, tenant_id, url, api_version, state, ordering, max_in_flight,"
        f" rate_limit, retry, secret_ciphertext, {options.TARGET_COLUMNS},"
        " CASE WHEN previous_secret_expires_at > now() THEN previous_secret_ciphertext END"
        " AS previous_secret_ciphertext"
        " FROM webhooks WHERE id = $1",
        key,
    )
    return None if row is None else _target(row, box)


def _target(row: asyncpg.Record, box: SecretBox) -> WebhookTarget:
    secrets = [box.decrypt(row["secret_ciphertext"])]
    if row["previous_secret_ciphertext"] is not None:
        secrets.append(box.decrypt(row["previous_secret_ciphertext"]))
    return WebhookTarget(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        secrets=tuple(secrets),
        api_version=row["api_version"],
        state=row["state"],
        ordering=row["ordering"],
        max_in_flight=row["max_in_flight"],
        rate_limit=rate_of(row["rate_limit"]),
        retry=stored_override(row["retry"]),
        asymmetric=any(map(is_signing_key, secrets)),
        **options.target_options(row, box),
    )


@dataclass(frozen=True, slots=True)
class VersionedTarget:
    """A webhook's delivery view and its row version (``load_targets``).

    ``target`` is None when ``version`` is the one the caller already holds: the row
    is unchanged and its secrets were not decrypted again.
    """

    version: str
    target: WebhookTarget | None


DECRYPT_SLICE = 50
# ``xmin`` changes with every write to a row (even one that forgets ``updated_at``); the
# suffix changes when the previous secret's grace period ends, which no write marks.
_LOAD_TARGETS = """
SELECT w.id::text AS id, r.version, r.version IS NOT DISTINCT FROM k.known AS unchanged,
       w.tenant_id, w.url, w.api_version, w.state, w.ordering, w.max_in_flight,
       w.rate_limit, w.retry, w.secret_ciphertext, {options},
       CASE WHEN r.previous_active THEN w.previous_secret_ciphertext END
           AS previous_secret_ciphertext
FROM unnest($1::uuid[], $2::text[]) AS k(id, known)
JOIN webhooks AS w ON w.id = k.id
CROSS JOIN LATERAL (
    SELECT COALESCE(w.previous_secret_expires_at > now(), false) AS previous_active
) AS p
CROSS JOIN LATERAL (
    SELECT w.xmin::text || CASE WHEN p.previous_active THEN '+' ELSE '' END AS version,
           p.previous_active
) AS r
""".format(options=", ".join(f"w.{c.strip()}" for c in options.TARGET_COLUMNS.split(",")))


async def load_targets(
    executor: Executor,
    box: SecretBox,
    webhook_ids: Sequence[str],
    known: Mapping[str, str] | None = None,
) -> dict[str, VersionedTarget]:
    """The delivery views of the existing webhooks among ``webhook_ids``, in one query.

    A webhook whose version equals ``known[id]`` comes back with ``target`` None (not
    decrypted); ids that are missing (or not uuids) are absent from the result.
    """
    known = known or {}
    # Results are keyed by the caller's spelling of each id (the row's is canonical).
    keys = valid_uuids(webhook_ids)
    asked = {str(key): webhook_id for webhook_id, key in keys.items()}
    if not asked:
        return {}
    rows = await executor.fetch(
        _LOAD_TARGETS,
        list(keys.values()),
        [known.get(webhook_id) for webhook_id in asked.values()],
    )
    loaded = {}
    for count, row in enumerate(rows, 1):
        target = None if row["unchanged"] else _target(row, box)
        loaded[asked[row["id"]]] = VersionedTarget(row["version"], target)
        if count % DECRYPT_SLICE == 0:
            # Decrypting is CPU work on the event loop: let deliveries run in between.
            await asyncio.sleep(0)
    return loaded
