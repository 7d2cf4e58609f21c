"""The health columns of ``webhooks``, as the attempt log moves them.

``last_success_at``, ``last_failure_at``, ``consecutive_failures`` and ``failing_since``
change with every batch of attempts: ``health_changes`` folds a batch into one net
change per webhook (test attempts excluded) and ``update_health`` writes them all in
one statement, inside the attempt log's transaction (``dispatcher.store.attempt_store``), so
the attempts and the health they imply commit together. A healthy webhook's
``last_success_at`` is kept to within ``LAST_SUCCESS_RESOLUTION`` (1 s): the batches in
between leave its row alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.ids import parse_uuid
from dispatcher.moments import utc

if TYPE_CHECKING:
    from dispatcher.store.db import Connection

# One statement for a whole batch: each row is one webhook's net change in the batch.
_UPDATE_HEALTH = """
UPDATE webhooks AS w SET
    last_success_at = GREATEST(w.last_success_at, h.last_success_at),
    last_failure_at = GREATEST(w.last_failure_at, h.last_failure_at),
    consecutive_failures = CASE WHEN h.succeeded THEN h.failures
                                ELSE w.consecutive_failures + h.failures END,
    failing_since = CASE WHEN h.failures = 0 THEN NULL
                         WHEN h.succeeded THEN h.first_failure_at
                         ELSE COALESCE(w.failing_since, h.first_failure_at) END
FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::int[],
            $5::timestamptz[], $6::bool[])
    AS h(webhook_id, last_success_at, last_failure_at, failures, first_failure_at, succeeded)
WHERE w.id = h.webhook_id
  -- A healthy webhook that only succeeded again is left alone unless its
  -- last_success_at is more than LAST_SUCCESS_RESOLUTION behind: no new row version,
  -- no trigger, no WAL for the common case of every batch (see update_health).
  AND NOT (h.succeeded AND h.failures = 0 AND h.last_failure_at IS NULL
           AND w.consecutive_failures = 0 AND w.failing_since IS NULL
           AND COALESCE(w.last_success_at >= h.last_success_at - $7::interval, false))
"""
# How far a healthy webhook's last_success_at may lag its newest success (see above).
LAST_SUCCESS_RESOLUTION = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class HealthChange:
    """One webhook's net health change over a batch of its attempts (in time order).

    ``succeeded``: some attempt succeeded, so the streak restarts from the failures
    after the last success; otherwise ``failures`` extend the current streak.
    """

    webhook_id: str
    last_success_at: datetime | None
    last_failure_at: datetime | None
    failures: int
    first_failure_at: datetime | None
    succeeded: bool


def health_changes(results: Iterable[AttemptResult]) -> list[HealthChange]:
    """Fold a batch of results into one net health change per webhook (tests excluded)."""
    by_webhook: dict[str, list[AttemptResult]] = {}
    for result in results:
        if not result.test:
            by_webhook.setdefault(result.webhook_id, []).append(result)
    changes = []
    for webhook_id, attempts in by_webhook.items():
        attempts.sort(key=lambda attempt: attempt.attempted_at)
        successes = [a.attempted_at for a in attempts if a.success]
        failures = [a.attempted_at for a in attempts if not a.success]
        trailing = [at for at in failures if not successes or at > successes[-1]]
        changes.append(
            HealthChange(
                webhook_id=webhook_id,
                last_success_at=utc(successes[-1]) if successes else None,
                last_failure_at=utc(failures[-1]) if failures else None,
                failures=len(trailing),
                first_failure_at=utc(trailing[0]) if trailing else None,
                succeeded=bool(successes),
            )
        )
    return changes


async def update_health(conn: Connection, changes: Sequence[HealthChange]) -> None:
    # Most batches are successes of webhooks that are healthy already: the UPDATE's
    # WHERE makes them no-ops in Postgres (the row is read, not rewritten), except for
    # moving last_success_at forward once it lags by LAST_SUCCESS_RESOLUTION. The
    # decision is Postgres's, not a cache here: another deliverer may have written a
    # failure streak for the webhook since (partitions move between deliverers).
    if not changes:
        return
    await conn.execute(
        _UPDATE_HEALTH,
        [parse_uuid(c.webhook_id) for c in changes],
        [c.last_success_at for c in changes],
        [c.last_failure_at for c in changes],
        [c.failures for c in changes],
        [c.first_failure_at for c in changes],
        [c.succeeded for c in changes],
        LAST_SUCCESS_RESOLUTION,
    )
