"""Whether a new lane's webhook is parked: known, or asked of Postgres once per batch.

A webhook may have been parked by the previous owner of its partition. A lane created
for a webhook whose parked state is unknown since its partition was assigned here
starts ``UNCHECKED`` (``dispatcher.deliverer.lane``): it sends nothing until one query
per batch of such lanes (``backlog.parked_among``) answered; a parked webhook's
deliveries then append to its backlog, behind what the previous owner parked. What
is learned is remembered per partition (``ParkedStates``) when a lane is forgotten,
until the partition is revoked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import asyncpg
import structlog
from aiokafka import TopicPartition

from dispatcher.deliverer.lane import Lane, Where
from dispatcher.deliverer.partitions import ParkedStates
from dispatcher.store import backlog
from dispatcher.store.db import TRANSIENT_ERRORS

log = structlog.get_logger(__name__)

# After a failed query, ask again this much later.
CHECK_RETRY_S = 1.0


class ParkedChecks:
    """Creates lanes in the right state and settles the unknown ones (see the module doc)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        lanes: dict[str, Lane],
        schedule: Callable[[Lane], None],
        track: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._pool = pool
        self._lanes = lanes  # the worker's, by webhook id
        self._schedule = schedule  # a settled lane gets its turn
        self._track = track  # the worker waits for (or cancels) the check on close
        self._known = ParkedStates()
        self._unchecked: set[str] = set()
        self._checking: asyncio.Task[None] | None = None
        # Bumped by every revocation: a check that spans one may be stale.
        self._epoch = 0

    def new_lane(self, webhook_id: str, partition: TopicPartition) -> Lane:
        """A lane for ``webhook_id``: parked or not if known, else unchecked."""
        known = self._known.get(partition, webhook_id)
        if known is None:
            return Lane(webhook_id, partition, Where.UNCHECKED)
        return Lane(webhook_id, partition, Where.PARKED if known else Where.MEMORY)

    def check_soon(self, lane: Lane) -> None:
        """Ask Postgres about ``lane`` with the rest of the current batch."""
        self._unchecked.add(lane.webhook_id)
        if self._checking is None or self._checking.done():
            # A task, not an await: it runs once the current batch is submitted, so one
            # query answers for every new lane of the batch.
            self._checking = asyncio.create_task(self._check(), name="lanes-check")
            self._track(self._checking)

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions left this process: what was known of them may be stale."""
        self._epoch += 1
        self._known.forget(partitions)

    def forgotten(self, lane: Lane) -> None:
        """Keep the parked state of a lane the worker forgets (if it is known)."""
        if lane.checked:
            self._known.remember(lane.partition, lane.webhook_id, lane.parked)

    async def _check(self) -> None:
        while self._unchecked:
            epoch = self._epoch
            webhook_ids = sorted(self._unchecked)
            try:
                parked = await backlog.parked_among(self._pool, webhook_ids)
            except TRANSIENT_ERRORS as exc:
                log.warning("lane.parked_check_failed", lanes=len(webhook_ids), error=str(exc))
                await asyncio.sleep(CHECK_RETRY_S)
                continue
            log.debug("lane.parked_checked", lanes=len(webhook_ids), parked=len(parked))
            if epoch != self._epoch:
                continue  # a revocation came in meanwhile: the answer may predate it
            for webhook_id in webhook_ids:
                self._unchecked.discard(webhook_id)
                lane = self._lanes.get(webhook_id)
                if lane is None or lane.checked:
                    continue
                lane.checked_parked(webhook_id in parked)
                self._schedule(lane)
