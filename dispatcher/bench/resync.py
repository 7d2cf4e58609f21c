"""Does a forced target-cache resync raise delivery latency? Measured, not assumed.

``python -m dispatcher.bench.resync [--webhooks 10000] [--seconds 3]``: a throw-away
database with N webhooks, a ``TargetCache`` warmed with all of them, and a steady
stream of deliveries on one event loop, like the deliverer's dispatch path (target
lookup, sign, POST to a loopback receiver). Latency of ``get()`` and of the whole
delivery is sampled per phase:

- ``steady``: no resync;
- ``resync, nothing changed``: ``refresh_all()`` while delivering (versions compared,
  nothing decrypted);
- ``resync, all changed``: every row rewritten first (as ``hooklane rotate-secrets``
  does), so the resync decrypts all N in batches;
- ``cleared cache (old resync)``: the previous behaviour, an emptied cache that each
  delivery refills with its own query and decrypt.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from dispatcher.bench.stack import bench_database_url, create_webhooks
from dispatcher.bench.stats import percentile
from dispatcher.deliverer.target_cache import TargetCache
from dispatcher.delivery.attempt import attempt_delivery
from dispatcher.delivery.http.sender import AiohttpSender
from dispatcher.delivery.secrets import SecretBox, new_key
from dispatcher.kafka.broker import free_port
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import Settings
from dispatcher.store import db

CONCURRENCY = 32  # deliveries in flight, like busy lanes


@dataclass
class Phase:
    """The samples of one phase, in milliseconds."""

    name: str
    lookups: list[float] = field(default_factory=list)
    deliveries: list[float] = field(default_factory=list)
    loop_lag: list[float] = field(default_factory=list)  # oversleep of a 10 ms timer
    took_s: float = 0.0  # the phase's length; for a resync phase, the resync's

    def row(self) -> str:
        """One table line: samples, p50/p99 of lookup and delivery."""

        def pct(samples: list[float], q: float) -> str:
            value = percentile(samples, q)
            return "       -" if value is None else f"{value:8.3f}"

        return (
            f"{self.name:<28} {len(self.deliveries):>7} {pct(self.lookups, 50)} "
            f"{pct(self.lookups, 99)} {pct(self.deliveries, 50)} {pct(self.deliveries, 99)}"
            f" {pct(self.loop_lag, 99)} {self.took_s:7.2f}"
        )


class Load:
    """``concurrency`` delivery loops over random webhooks, recording into ``phase``."""

    def __init__(
        self, cache: TargetCache, ids: list[str], sender: AiohttpSender, concurrency: int
    ) -> None:
        self.concurrency = concurrency
        self.cache = cache
        self.ids = ids
        self.sender = sender
        self.phase: Phase | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(n)) for n in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._probe_lag()))

    async def _probe_lag(self) -> None:
        # A blocked loop shows as oversleep: the resync must never hold it.
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            if self.phase is not None:
                self.phase.loop_lag.append((time.perf_counter() - started - 0.01) * 1000)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self, n: int) -> None:
        rng = random.Random(n)
        while True:
            webhook_id = rng.choice(self.ids)
            started = time.perf_counter()
            target = await self.cache.get(webhook_id)
            looked_up = time.perf_counter()
            assert target is not None
            event = Event(str(uuid.uuid4()), "BENCH", target.tenant_id, int(time.time()), {})
            await attempt_delivery(self.sender, target, DeliveryTask(webhook_id, event), 1)
            done = time.perf_counter()
            if self.phase is not None:
                self.phase.lookups.append((looked_up - started) * 1000)
                self.phase.deliveries.append((done - started) * 1000)


async def measure(
    load: Load, name: str, seconds: float, during: Callable[[], Awaitable[object]] | None = None
) -> Phase:
    """Sample for ``seconds``, or for as long as ``during()`` runs (at least 0.5 s)."""
    phase = load.phase = Phase(name)
    started = time.perf_counter()
    if during is None:
        await asyncio.sleep(seconds)
        phase.took_s = time.perf_counter() - started
    else:
        await during()
        phase.took_s = time.perf_counter() - started
        await asyncio.sleep(max(0.0, 0.5 - phase.took_s))
    load.phase = None
    return phase


async def run(
    base: Settings, webhooks: int, seconds: float, concurrency: int = CONCURRENCY
) -> list[Phase]:
    """Set up, measure the four phases, tear down; the phases."""
    settings = base.replace(
        database_url=bench_database_url(base.database_url, "resync_" + uuid.uuid4().hex[:6]),
        allow_private_targets=True,
    )
    await db.migrate(settings.database_url)
    pool = await db.create_pool(settings.database_url, min_size=2, max_size=4)
    app = web.Application()
    app.router.add_post("/{name}", _answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sender = AiohttpSender(settings)
    try:
        box = SecretBox([new_key()])
        hooks = await create_webhooks(
            pool, box, [f"http://127.0.0.1:{port}/w{n}" for n in range(webhooks)]
        )
        ids = list(hooks.webhook_ids)
        cache = TargetCache.from_store(pool, box)
        for start in range(0, len(ids), 100):
            await asyncio.gather(*(cache.get(i) for i in ids[start : start + 100]))
        await cache.refresh_all()  # learn every version: the steady state after 30 s
        load = Load(cache, ids, sender, concurrency)
        load.start()
        phases = [await measure(load, "steady", seconds)]
        phases.append(await measure(load, "resync, nothing changed", seconds, cache.refresh_all))
        await pool.execute("UPDATE webhooks SET updated_at = now()")
        phases.append(await measure(load, "resync, all changed", seconds, cache.refresh_all))
        phases.append(await measure(load, "steady again", seconds))
        load.cache = TargetCache.from_store(pool, box)
        phases.append(await measure(load, "cleared cache (old resync)", seconds))
        await load.stop()
        return phases
    finally:
        await sender.close()
        await runner.cleanup()
        await pool.close()
        await db.drop_database(settings.database_url)


async def _answer(_request: web.Request) -> web.Response:
    return web.Response(status=204)


def main(argv: list[str] | None = None) -> int:
    """Print the table of phases."""
    parser = argparse.ArgumentParser(prog="python -m dispatcher.bench.resync")
    parser.add_argument("--webhooks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args(argv)
    phases = asyncio.run(run(Settings.from_env(), args.webhooks, args.seconds, args.concurrency))
    print(
        f"{args.webhooks} webhooks, {args.concurrency} deliveries in flight; latencies in ms\n"
        f"{'phase':<28} {'samples':>7} {'get p50':>8} {'get p99':>8} "
        f"{'dlv p50':>8} {'dlv p99':>8} {'lag p99':>8} {'took s':>7}"
    )
    for phase in phases:
        print(phase.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
