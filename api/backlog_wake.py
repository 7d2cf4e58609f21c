"""Waking a parked backlog when its endpoint is known to answer again.

A parked webhook's backlog is retried on the long schedule (minutes to hours). When a
test trigger gets a 2xx, or someone retries one of its attempts or presses the
portal's "Retry now", waiting for that slot helps nobody: the backlog's head is made
due now (``backlog.retry_now``); the change NOTIFYs ``hooklane_parked`` and the
scheduler of whichever deliverer claims it retries the head at once and, on a 2xx,
drains the backlog in order. DISABLED webhooks stay parked (``retry_now`` skips them).
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from api.app_keys import POOL
from dispatcher.store import backlog

log = structlog.get_logger(__name__)


async def wake_parked_backlog(request: web.Request, webhook_id: str, because: str) -> bool:
    """Make ``webhook_id``'s parked backlog due now; True if it was parked and waiting."""
    woken = await backlog.retry_now(request.app[POOL], webhook_id, time.time())
    if woken:
        log.info("backlog.woken", webhook_id=webhook_id, because=because)
    return woken
