"""Disruptions and the scenario runner shared by the short and the long chaos tests.

A disruption is an async function that acts on the running stack while events stream
and returns the moments (unix time) each disruption ended — when the killed process
was respawned, the database accepted connections again, or the broker was thawed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from dispatcher.kafka.broker import LaunchedBroker
from dispatcher.settings import Settings
from tests.chaos.harness import (
    RESULTS,
    Outcome,
    Stack,
    logged_successes,
    prepare,
    stream,
    table,
)
from tests.support.pipeline import wait_until
from tests.support.receiver import Received, Receiver, Respond

Disruption = Callable[[Stack], Awaitable[list[float]]]
CATCH_UP_S = 240.0


@dataclasses.dataclass
class Failing:
    """Receiver paths that answer 500 until ``recover()`` (their webhooks get parked)."""

    paths: set[str]

    def respond(self, request: Received) -> int:
        return 500 if request.path.lstrip("/") in self.paths else 200

    def recover(self) -> None:
        self.paths.clear()


def scale_out_and_in(failing: Failing, rng: random.Random) -> Disruption:
    """Deliverers 1 -> 3 -> 1 and routers 1 -> 2 -> 1 (joins, then graceful leaves) while
    ``failing`` webhooks are parked; they recover while the stack scales in."""

    async def disrupt(stack: Stack) -> list[float]:
        ends = []
        await asyncio.sleep(rng.uniform(2.0, 4.0))  # the failing webhooks park meanwhile
        await stack.spawn("deliverer2")
        await stack.spawn("router2")
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        await stack.spawn("deliverer3")
        ends.append(time.time())
        await asyncio.sleep(rng.uniform(6.0, 9.0))  # rebalanced: parked lanes moved
        await stack.terminate("deliverer2")
        await stack.terminate("router2")
        ends.append(time.time())
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        failing.recover()
        await stack.terminate("deliverer3")
        ends.append(time.time())
        return ends

    return disrupt


def kill_repeatedly(
    names: list[str], kills: int, rng: random.Random, between: tuple[float, float] = (1.5, 5.0)
) -> Disruption:
    """SIGKILL a random one of ``names`` ``kills`` times, ``between`` seconds apart (at
    random), respawning it after a short random delay."""

    async def disrupt(stack: Stack) -> list[float]:
        ends = []
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(*between))
            name = rng.choice(names)
            await stack.kill(name)
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # a crash loop's restart delay
            await stack.spawn(name)
            ends.append(time.time())
        return ends

    return disrupt


def restart_database(
    settings: Settings,
    outages: int,
    down_s: float,
    rng: random.Random,
    between: tuple[float, float] = (2.0, 4.0),
) -> Disruption:
    """Simulate Postgres restarts of THIS test's database only: refuse new connections,
    terminate every backend, stay down ``down_s`` seconds, then accept connections again;
    ``between`` bounds the seconds up before each outage. (The machine's Postgres is
    shared, so the server itself is never restarted.)"""

    async def disrupt(stack: Stack) -> list[float]:
        ends = []
        # ALTER DATABASE cannot refuse connections to the database it is run from.
        maintenance = settings.database_url.rsplit("/", 1)[0] + "/postgres"
        name = settings.database_url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(maintenance)
        try:
            for _ in range(outages):
                await asyncio.sleep(rng.uniform(*between))
                await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
                try:
                    await conn.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = $1",
                        name,
                    )
                    await asyncio.sleep(down_s)
                finally:
                    await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
                ends.append(time.time())
        finally:
            await conn.close()
        return ends

    return disrupt


def freeze_broker(broker: LaunchedBroker, frozen_s: float, rng: random.Random) -> Disruption:
    """SIGSTOP the broker for ``frozen_s`` seconds at a random moment, then SIGCONT."""

    async def disrupt(stack: Stack) -> list[float]:
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        broker.freeze()
        try:
            await asyncio.sleep(frozen_s)
        finally:
            broker.thaw()
        return [time.time()]

    return disrupt


async def run_scenario(
    name: str,
    settings: Settings,
    logs: Path,
    disruption: Disruption,
    *,
    events: int,
    rate: float,
    webhooks: int = 2,
    respond: Respond | None = None,
    ordered: bool = False,
    tail_s: float | None = None,
    after: Callable[[], None] | None = None,
    unhealthy: frozenset[str] = frozenset(),
) -> Outcome:
    """Stream ``events`` through the subprocess stack while ``disruption`` runs; then wait
    for every (event, webhook) delivery, record the outcome and check nothing was lost
    (and, if ``ordered``, that every webhook first received them in publish order).

    With ``tail_s``, publishing stops that many seconds after the disruption (``events``
    is then a ceiling); ``after`` runs when the disruption is over (e.g. failing
    webhooks recover); ``unhealthy`` receiver paths stay out of the recovery time."""
    async with Receiver(respond) as rx:
        ledger = await prepare(settings, rx, webhooks)
        stack = Stack(settings, logs)
        await stack.start()
        try:
            stop = asyncio.Event()
            publishing = asyncio.create_task(stream(settings, ledger, events, rate, stop))
            # Disrupt a flowing pipeline, not one still starting up.
            await wait_until(lambda: bool(rx.requests), 120, 0.05, message="a first delivery")
            ends = await disruption(stack)
            if after is not None:
                after()
            if tail_s is not None:
                await asyncio.sleep(tail_s)
                stop.set()
            await publishing
            with contextlib.suppress(AssertionError):  # reported below as lost deliveries
                await wait_until(
                    lambda: ledger.missing(rx) == 0, CATCH_UP_S, 0.2, message="every delivery"
                )
            alive = stack.alive()
        finally:
            await stack.stop()  # graceful: the attempt log flushes what it holds
        outcome = dataclasses.replace(
            ledger.outcome(name, rx, ends, unhealthy),
            logged=await logged_successes(settings, ledger),
            died=",".join(sorted(proc for proc, up in alive.items() if not up)) or "-",
        )
    RESULTS.append(outcome)
    print(f"\n{table([outcome])}\n(logs: {logs})")
    # A process that died is named first: its death explains lost deliveries.
    assert all(alive.values()), f"a process died and was not restarted: {alive} (logs in {logs})"
    assert outcome.lost == 0, f"{outcome.lost} deliveries lost (logs in {logs})"
    if ordered:
        assert outcome.order_violations == 0, f"order violated (logs in {logs})"
    return outcome
