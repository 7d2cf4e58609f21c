"""The event-loop lag monitor: how late a sleeping task wakes up, every half second.

A loop blocked by CPU-bound work (signing a huge body, a synchronous call) delays every
request and commit; this gauge shows it before latency percentiles do.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

INTERVAL_S = 0.5


async def monitor_loop_lag(gauge: Gauge, interval_s: float = INTERVAL_S) -> None:
    """Set ``gauge`` to each wake-up's delay beyond ``interval_s``; runs until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        gauge.set(max(0.0, loop.time() - started - interval_s))
