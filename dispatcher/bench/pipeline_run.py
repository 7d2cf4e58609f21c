"""One pipeline scenario's processes and how the scenarios watch them.

``Running`` holds a scenario's receiver, router and deliverer; the helpers wait for
routing, sample memory and CPU, measure the broker floor of a shape and turn metrics
into a ``ScenarioResult``. The scenarios themselves are ``dispatcher.bench.pipeline``'s.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dispatcher.bench.options import BenchOptions
from dispatcher.bench.procs import Child, wait_idle
from dispatcher.bench.results import ScenarioResult
from dispatcher.bench.stack import BENCH_TOPIC, Receiver, Stack
from dispatcher.bench.workload import event_data, topic_size
from dispatcher.runtime.supervisor import child_env
from dispatcher.settings import Settings

WARM_UP_S = 60.0
ROUTE_SETTLE_S = 3.0
# A router that has routed nothing after this long is not going to.
ROUTE_START_S = 120.0


def default_timeout(deliveries: int, floor: float = 60.0) -> float:
    """How long to wait for ``deliveries``: generous (100/s), never under ``floor``."""
    return max(floor, deliveries / 100.0)


class Running:
    """A receiver plus router and deliverer of one scenario; stops them all on exit."""

    def __init__(self, stack: Stack, settings: Settings, overrides: dict[str, str]) -> None:
        self.stack = stack
        self.settings = settings
        self.router, self.deliverer, self.env = stack.dispatcher(settings, overrides)
        self.receiver: Receiver | None = None

    @property
    def children(self) -> list[Child]:
        """Router and deliverer."""
        return [self.router, self.deliverer]

    def cpu(self) -> float:
        """Router + deliverer CPU seconds so far."""
        return self.router.cpu() + self.deliverer.cpu()

    async def start_receiver(self, port: int = 0) -> Receiver:
        """Start the receiver (on ``port``, or a free one)."""
        self.receiver = Receiver(port)
        await self.receiver.start(child_env(self.settings), self.stack.log_dir)
        return self.receiver

    async def start_dispatcher(self) -> None:
        """Start router and deliverer and wait until both sit idle (joined, ready)."""
        for child in self.children:
            await child.start(self.env, self.stack.log_dir)
        if not await wait_idle(self.children, within_s=40):
            dead = [c for c in self.children if not c.running]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited: {dead[0].log_tail(8)}")

    async def warm_up(self, tenant_id: str) -> float:
        """Send one event end to end and wait for it; returns the seconds it took.

        Idle processes are not necessarily ready processes: consumer-group joins and
        pattern subscriptions settle in the background. One delivery that made it
        through proves the pipeline is live; the receiver then forgets it.
        """
        from dispatcher.kafka.producer import Producer

        assert self.receiver is not None
        started = time.monotonic()
        async with Producer(self.settings) as producer:
            await producer.publish(BENCH_TOPIC, event_data(0, ""), tenant_id=tenant_id)
        deadline = started + WARM_UP_S
        while (await self.receiver.stats())["unique_ok"] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm-up delivery did not arrive within {WARM_UP_S}s")
            for child in self.children:
                if not child.running:
                    raise RuntimeError(f"{child.name} exited: {child.log_tail(8)}")
            await asyncio.sleep(0.05)
        await self.receiver.reset()
        return time.monotonic() - started

    async def stop(self) -> None:
        """Stop everything this scenario started."""
        for child in self.children:
            await child.stop()
        if self.receiver is not None:
            await self.receiver.stop()


def cpu_by_process(run: Running, stack: Stack) -> dict[str, float]:
    """CPU seconds so far of router, deliverer, broker and receiver."""
    return {
        "router": run.router.cpu(),
        "deliverer": run.deliverer.cpu(),
        "broker": stack.broker_cpu(),
        "receiver": run.receiver.child.cpu() if run.receiver else 0.0,
    }


async def wait_routed(
    run: Running, settings: Settings, events: int, options: BenchOptions
) -> tuple[float, int]:
    """Wait until the router has routed the queue; returns (seconds, tasks counted).

    Done when the deliveries topic holds a task per event, or when its size stopped
    growing for ``ROUTE_SETTLE_S`` (the embedded broker's end offsets can be a little
    off, so an exact count is not a safe finish line).
    """
    from dispatcher.bench.progress import Progress

    progress = Progress("route", events)
    started = time.monotonic()
    deadline = started + (options.timeout or default_timeout(events, 120.0))
    routed, last_change, last_size = 0, started, -1
    while time.monotonic() < deadline:
        routed = await topic_size(settings, settings.deliveries_topic)
        progress.update(routed)
        for child in run.children:
            if not child.running:
                raise RuntimeError(f"{child.name} exited: {child.log_tail(8)}")
            child.sample_memory()
        now = time.monotonic()
        if routed != last_size:
            last_size, last_change = routed, now
        if routed >= events or (routed > 0 and now - last_change >= ROUTE_SETTLE_S):
            break
        if routed == 0 and now - started >= ROUTE_START_S:
            progress.close("no progress")
            raise RuntimeError(
                f"the router routed nothing in {ROUTE_START_S:.0f}s: the embedded broker did "
                f"not serve the {events:,}-event topic (see the process logs)"
            )
        await asyncio.sleep(0.5)
    progress.close()
    return time.monotonic() - started, routed


async def sample_for(run: Running, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for child in run.children:
            child.sample_memory()
        await asyncio.sleep(0.25)


def every(seconds: float, action: Callable[[], Awaitable[None]]) -> Callable[[], Any]:
    """``action`` at most once per ``seconds`` (a throttled on_tick)."""
    last = -1e9

    def tick() -> Awaitable[None] | None:
        nonlocal last
        now = time.monotonic()
        if now - last < seconds:
            return None
        last = now
        return action()

    return tick


async def broker_floor_metrics(
    stack: Stack,
    options: BenchOptions,
    name: str,
    rate_per_s: float,
    webhooks: int,
    fanout: int,
    wait_s: float,
) -> dict[str, Any]:
    """The ``broker_floor_*`` metrics of the shape (``dispatcher.bench.floor``), on a
    fresh broker; none with ``--no-floor``. A failure is reported, never fatal."""
    if not options.floor:
        return {}
    from dispatcher.bench.floor import broker_floor

    print(f"== {name}: broker floor (the same shape, no router or deliverer work)", file=sys.stderr)
    try:
        settings = await stack.fresh_broker(f"{name}-floor")
        duration = options.sizes.duration
        result = await broker_floor(
            settings, stack.broker_cpu, rate_per_s, duration, webhooks, fanout, wait_s
        )
    except Exception as exc:  # the scenario's own figures stand without it
        return {"broker_floor_error": f"{type(exc).__name__}: {exc}"}
    finally:
        stack.stop_broker()
    return result.metrics()


def finish(name: str, params: dict[str, Any], metrics: dict[str, Any]) -> ScenarioResult:
    if not metrics.get("completed"):
        return ScenarioResult(
            name,
            "failed",
            f"only {metrics.get('deliveries')} deliveries arrived before the timeout",
            params,
            metrics,
        )
    return ScenarioResult(name, params=params, metrics=metrics)
