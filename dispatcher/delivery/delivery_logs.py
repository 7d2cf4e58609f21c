"""Delivery log lines that correlate: every line carries event, webhook, tenant, attempt
and the event's ``trace_id`` (W3C; the one receivers get in ``traceparent``).

Success lines are sampled (``HOOKLANE_LOG_SAMPLE``: the fraction kept) so they do not
drown the logs at thousands of deliveries a second; failures are always logged.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from dispatcher.delivery.attempt import AttemptResult


def keep_line(sample: float, rng: random.Random) -> bool:
    """Whether a sampled line is written: always at 1, never at 0, else with probability."""
    if sample >= 1.0:
        return True
    if sample <= 0.0:
        return False
    return rng.random() < sample


class DeliveryLog:
    """Writes a deliverer's per-attempt log lines with the correlation fields."""

    def __init__(self, sample: float, rng: random.Random | None = None) -> None:
        self._sample = sample
        self._rng = rng or random.Random()
        self._log = structlog.get_logger("dispatcher.delivery")

    @staticmethod
    def fields(event_id: str, webhook_id: str, tenant_id: str, attempt: int) -> dict[str, Any]:
        """The correlation fields of one attempt (also for callers' own lines)."""
        return {
            "event_id": event_id,
            "webhook_id": webhook_id,
            "tenant_id": tenant_id,
            "attempt": attempt,
        }

    def success(
        self, event_id: str, webhook_id: str, tenant_id: str, attempt: int, **extra: Any
    ) -> None:
        """A delivered attempt: logged for the sampled fraction only (``extra``: more
        fields, such as ``trace_id``)."""
        # Asked first: at thousands a second, building a line nobody keeps costs.
        if keep_line(self._sample, self._rng) and self._log.is_enabled_for(logging.INFO):
            self._log.info(
                "delivery.succeeded",
                **self.fields(event_id, webhook_id, tenant_id, attempt),
                **extra,
            )

    def failure(
        self, event_id: str, webhook_id: str, tenant_id: str, attempt: int, **extra: Any
    ) -> None:
        """A failed attempt: always logged."""
        self._log.warning(
            "delivery.failed", **self.fields(event_id, webhook_id, tenant_id, attempt), **extra
        )

    def attempted(self, result: AttemptResult, action: str) -> None:
        """The line of one attempt; ``action`` is what the policy does next (``retry``...)."""
        ids = (result.event_id, result.webhook_id, result.tenant_id, result.attempt)
        if result.success:
            self.success(
                *ids,
                status=result.status_code,
                duration_ms=result.duration_ms,
                trace_id=result.trace_id,
            )
        else:
            self.failure(
                *ids,
                status=result.status_code,
                error=result.error,
                action=action,
                trace_id=result.trace_id,
            )
