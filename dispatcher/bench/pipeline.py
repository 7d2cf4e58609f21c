"""Scenarios 2-5 against the real pipeline: router and deliverer as separate processes.

(2) throughput and (4) isolation pre-publish their events while the router is paused
(SIGSTOP), so the clock and the CPU count start when it resumes: no publishing, no
process start-up and no group join inside the measurement. (3) latency publishes at a
fixed rate into the running pipeline. (5) backlog publishes everything into the
running pipeline while the receiver is down, waits until the router routed it all,
then brings the receiver up.

Each scenario gets a fresh broker (``Stack.broker_kind``) and topic prefix; the
database (and so the webhooks of earlier scenarios, on other tenants) is shared by the
run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dispatcher.bench import profiling
from dispatcher.bench.options import BenchOptions
from dispatcher.bench.pipeline_run import (
    Running,
    broker_floor_metrics,
    cpu_by_process,
    default_timeout,
    every,
    finish,
    sample_for,
    wait_routed,
)
from dispatcher.bench.results import ScenarioResult
from dispatcher.bench.stack import Stack, webhook_url
from dispatcher.bench.stats import per_item_us, rate, ratio, since_stage, summarize, timeline
from dispatcher.bench.workload import (
    paced_publish,
    prepublish,
    routed_times,
    wait_for_deliveries,
)
from dispatcher.kafka.broker import free_port

# (5) retries quickly and parks after 5 s, so the drain starts within seconds of the
# receiver coming back instead of waiting for the production 5-minute long retry.
BACKLOG_ENV = {"HOOKLANE_RETRY_SCHEDULE": "0.5s,1s,2s,2s", "HOOKLANE_PARK_AFTER": "5s"}
# (5) measures memory, drain rate and order, not payload size: small bodies keep the
# embedded broker (in-memory storage, no retention) at ~0.5 KB a routed event instead
# of ~2.6 KB (1 KB bodies held twice, as the event and as its task), which at a
# million events grew it to 2.9 GB.
BACKLOG_BODY_BYTES = 256
MB = 1024.0
IDLE_SAMPLE_S = 2.0


def failing_modes(webhooks: int, fraction: float) -> list[str]:
    """The answer mode of each webhook: ``fraction`` of them fail, half 503, half hang.

    Failing webhooks are spread evenly, so they share partitions with healthy ones.
    """
    failing = round(webhooks * fraction)
    modes = ["ok"] * webhooks
    if failing == 0:
        return modes
    step = webhooks / failing
    for n in range(failing):
        modes[int(n * step)] = "fail503" if n % 2 == 0 else "hang"
    return modes


def scenario(
    name: str, stack: Stack, options: BenchOptions, done: dict[str, ScenarioResult]
) -> Callable[[], Awaitable[ScenarioResult]]:
    """The coroutine function running scenario ``name``."""
    if name == "throughput":
        return lambda: run_throughput(stack, options, done.get("ceiling"))
    if name == "isolation":
        return lambda: run_isolation(stack, options, done.get("throughput"))
    if name == "latency":
        sizes = options.sizes
        return lambda: run_latency(stack, options, "latency", sizes.rate, sizes.webhooks, 1)
    if name == "fanout":
        sizes = options.sizes
        webhooks = sizes.fanout_webhooks
        return lambda: run_latency(stack, options, "fanout", sizes.fanout_rate, webhooks, webhooks)
    if name == "backlog":
        return lambda: run_backlog(stack, options)
    raise ValueError(f"no such pipeline scenario {name!r}")


async def _measure_batch(
    stack: Stack, options: BenchOptions, scenario_name: str, modes: list[str]
) -> tuple[dict[str, Any], dict[str, Any], list[float]]:
    """Run one pre-published batch through the pipeline: (params, metrics, completions)."""
    sizes = options.sizes
    settings = await stack.fresh_broker(scenario_name)
    run = Running(stack, settings, {})
    try:
        receiver = await run.start_receiver()
        urls = [webhook_url(receiver.port, mode, i) for i, mode in enumerate(modes)]
        hooks = await stack.webhooks([*urls, webhook_url(receiver.port, "ok", "warmup")])
        healthy = {i for i, mode in enumerate(modes) if mode == "ok"}
        expected = sum(1 for i in range(sizes.events) if i % len(modes) in healthy)
        await run.start_dispatcher()
        warm_up_s = await run.warm_up(hooks.tenant_ids[-1])
        run.router.pause()
        try:
            publish_s = await prepublish(settings, hooks.tenant_ids[:-1], sizes.events)
        finally:
            run.router.resume()
        cpu0, started = run.cpu(), time.time()
        router0, deliverer0 = run.router.cpu(), run.deliverer.cpu()
        broker0, receiver0 = stack.broker_cpu(), receiver.child.cpu()
        recorder = await profiling.start(options.profile, scenario_name, run.children)
        timeout = options.timeout or default_timeout(sizes.events)
        try:
            watch = await wait_for_deliveries(receiver, expected, timeout, run.children)
        finally:
            profiles = await profiling.finish(recorder)
        cpu = run.cpu() - cpu0
        router_cpu, deliverer_cpu = run.router.cpu() - router0, run.deliverer.cpu() - deliverer0
        broker_cpu, receiver_cpu = stack.broker_cpu() - broker0, receiver.child.cpu() - receiver0
        arrivals = await receiver.samples("arrivals")
    finally:
        await run.stop()
        stack.stop_broker()
    last = watch.stats["last_at"] or started
    elapsed = max(1e-9, last - started)
    delivered = int(watch.stats["unique_ok"])
    params = {
        "events": sizes.events,
        "webhooks": len(modes),
        "failing_webhooks": len(modes) - len(healthy),
        "expected_deliveries": expected,
        "prepublish_s": round(publish_s, 2),
        "warm_up_s": round(warm_up_s, 2),
        "timeout_s": timeout,
    }
    metrics: dict[str, Any] = {
        "completed": watch.completed,
        "deliveries": delivered,
        "duplicates": watch.stats["duplicates"],
        "order_violations": watch.stats["order_violations"],
        "elapsed_s": round(elapsed, 3),
        "deliveries_per_s": round(rate(delivered, elapsed) or 0.0, 1),
        "cpu_us_per_delivery": per_item_us(cpu, delivered),
        "router_cpu_us_per_delivery": per_item_us(router_cpu, delivered),
        "deliverer_cpu_us_per_delivery": per_item_us(deliverer_cpu, delivered),
        # Share of one core each process used while the clock ran (1.0: saturated).
        "router_core_share": round(router_cpu / elapsed, 3),
        "deliverer_core_share": round(deliverer_cpu / elapsed, 3),
        "broker_core_share": round(broker_cpu / elapsed, 3),
        "receiver_core_share": round(receiver_cpu / elapsed, 3),
        "deliverer_peak_rss_mb": round(run.deliverer.peak_rss_kb / MB, 1),
        "router_peak_rss_mb": round(run.router.peak_rss_kb / MB, 1),
        "failing_requests": {
            "fail503": watch.stats["by_mode"]["fail503"],
            "hang": watch.stats["by_mode"]["hang"],
        },
    }
    if profiles:
        metrics["profile"] = profiles
    completions = [a - started for a in arrivals]
    return params, metrics, completions


async def run_throughput(
    stack: Stack, options: BenchOptions, ceiling: ScenarioResult | None
) -> ScenarioResult:
    """(2): pre-published events, one delivery each, to ordered webhooks; vs (1)."""
    modes = ["ok"] * options.sizes.webhooks
    params, metrics, completions = await _measure_batch(stack, options, "throughput", modes)
    summary = summarize(completions)
    metrics["completion_p50_s"] = summary["p50"]
    metrics["completion_p99_s"] = summary["p99"]
    reference = ceiling.metrics if ceiling and ceiling.status == "ok" else {}
    metrics["ratio_to_ceiling"] = ratio(
        metrics["deliveries_per_s"], reference.get("requests_per_s")
    )
    metrics["cpu_ratio_to_ceiling"] = ratio(
        metrics["cpu_us_per_delivery"], reference.get("client_cpu_us_per_request")
    )
    # Against the bare aiohttp client on the pipeline's own loop (uvloop by default).
    like = reference.get("like_for_like")
    metrics["like_for_like_ratio"] = ratio(
        metrics["deliveries_per_s"], reference.get(f"{like}_requests_per_s")
    )
    metrics["like_for_like_cpu_ratio"] = ratio(
        metrics["cpu_us_per_delivery"], reference.get(f"{like}_client_cpu_us_per_request")
    )
    return finish("throughput", params, metrics)


async def run_isolation(
    stack: Stack, options: BenchOptions, throughput: ScenarioResult | None
) -> ScenarioResult:
    """(4): as (2) with a share of webhooks answering 503 or hanging; healthy vs (2)."""
    modes = failing_modes(options.sizes.webhooks, options.failing_fraction)
    params, metrics, completions = await _measure_batch(stack, options, "isolation", modes)
    summary = summarize(completions)
    metrics["healthy_deliveries_per_s"] = metrics.pop("deliveries_per_s")
    metrics["healthy_p50_s"] = summary["p50"]
    metrics["healthy_p99_s"] = summary["p99"]
    reference = throughput.metrics if throughput and throughput.status == "ok" else {}
    metrics["ratio_to_throughput"] = ratio(
        metrics["healthy_deliveries_per_s"], reference.get("deliveries_per_s")
    )
    metrics["p99_ratio_to_throughput"] = ratio(
        metrics["healthy_p99_s"], reference.get("completion_p99_s")
    )
    return finish("isolation", params, metrics)


async def run_latency(
    stack: Stack, options: BenchOptions, name: str, rate_per_s: float, webhooks: int, fanout: int
) -> ScenarioResult:
    """(3) and (6): publish at a fixed rate; publish→receive latency percentiles.

    Each event goes to ``fanout`` webhooks ((3): one each, to ``webhooks`` webhooks;
    (6): every event to all webhooks of one tenant).
    """
    sizes = options.sizes
    settings = await stack.fresh_broker(name)
    run = Running(stack, settings, {})
    try:
        receiver = await run.start_receiver()
        urls = [webhook_url(receiver.port, "ok", i) for i in range(webhooks)]
        hooks = await stack.webhooks(urls, per_tenant=fanout)
        warm = await stack.webhooks([webhook_url(receiver.port, "ok", "warmup")])
        await run.start_dispatcher()
        warm_up_s = await run.warm_up(warm.tenant_ids[0])
        # What the idle pipeline costs (polling), before any load.
        idle0 = cpu_by_process(run, stack)
        await asyncio.sleep(IDLE_SAMPLE_S)
        idle = {
            f"idle_{name}_core_share": round((used - idle0[name]) / IDLE_SAMPLE_S, 3)
            for name, used in cpu_by_process(run, stack).items()
        }
        cpu0, started = run.cpu(), time.monotonic()
        shares0 = cpu_by_process(run, stack)
        published, publish_s = await paced_publish(
            settings, hooks.tenant_ids, rate_per_s, sizes.duration
        )
        timeout = options.timeout or 30.0
        expected = published * fanout
        watch = await wait_for_deliveries(receiver, expected, timeout, run.children)
        cpu = run.cpu() - cpu0
        elapsed = time.monotonic() - started
        shares = {
            f"{name}_core_share": round((used - shares0[name]) / elapsed, 3)
            for name, used in cpu_by_process(run, stack).items()
        }
        latencies = await receiver.samples("latencies")
        arrivals = await receiver.samples("arrivals")
        routed_at = await routed_times(settings, settings.deliveries_topic, expected)
    finally:
        await run.stop()
        stack.stop_broker()
    floor = await broker_floor_metrics(stack, options, name, rate_per_s, webhooks, fanout, timeout)
    summary = summarize(latencies, scale=1000.0)
    routed_summary = summarize([routed - sent for sent, routed in routed_at], scale=1000.0)
    sent_arrived = [(a - lat, a) for a, lat in zip(arrivals, latencies, strict=True)]
    deliverer_summary = summarize(since_stage(routed_at, sent_arrived), scale=1000.0)
    delivered = int(watch.stats["unique_ok"])
    params = {
        "rate": rate_per_s,
        "duration_s": sizes.duration,
        "webhooks": webhooks,
        "fanout": fanout,
        "deliveries_per_s": rate_per_s * fanout,
        "warm_up_s": round(warm_up_s, 2),
        "timeout_s": timeout,
    }
    metrics = {
        "completed": watch.completed,
        "events": published,
        "deliveries": delivered,
        "missing": expected - delivered,
        "duplicates": watch.stats["duplicates"],
        "achieved_rate": round(rate(published, publish_s) or 0.0, 1),
        "p50_ms": summary["p50"],
        "p90_ms": summary["p90"],
        "p99_ms": summary["p99"],
        "max_ms": summary["max"],
        # The router's part of the latency (publish → task on the deliveries topic).
        "routed_p50_ms": routed_summary["p50"],
        "routed_p99_ms": routed_summary["p99"],
        # The rest: router produce → receiver (deliverer fetch, lane queueing, HTTP).
        "deliverer_stage_p50_ms": deliverer_summary["p50"],
        "deliverer_stage_p99_ms": deliverer_summary["p99"],
        "cpu_us_per_delivery": per_item_us(cpu, delivered),
        "deliverer_peak_rss_mb": round(run.deliverer.peak_rss_kb / MB, 1),
        **shares,
        **idle,
        **floor,
        # [second of publishing, deliveries, p50 s, max s]
        "timeline": timeline(
            [a - lat for a, lat in zip(arrivals, latencies, strict=True)], latencies
        ),
    }
    return finish(name, params, metrics)


async def run_backlog(stack: Stack, options: BenchOptions) -> ScenarioResult:
    """(5): queue everything while the receiver is down, then drain; RSS and drain rate."""
    sizes = options.sizes
    settings = await stack.fresh_broker("backlog")
    run = Running(stack, settings, BACKLOG_ENV)
    port = free_port()
    parked_max, routed_s, routed, broker_rss_kb = 0, 0.0, 0, 0
    try:
        urls = [webhook_url(port, "ok", i) for i in range(sizes.backlog_webhooks)]
        hooks = await stack.webhooks(urls)
        # The outage comes first and the events arrive during it, as in production:
        # they flow through router and deliverer (failing, retrying, parking) while
        # they are published. (A million events published before the router starts
        # stalled the embedded broker: it then served no fetch for minutes.)
        await run.start_dispatcher()
        publish_s = await prepublish(
            settings,
            hooks.tenant_ids,
            sizes.backlog_events,
            label="queue",
            body_bytes=BACKLOG_BODY_BYTES,
        )
        routed_s, routed = await wait_routed(run, settings, sizes.backlog_events, options)
        await sample_for(run, sizes.down)
        parked_max = await stack.parked_webhooks()
        receiver = await run.start_receiver(port)
        up_at = time.time()

        async def tick() -> None:
            nonlocal parked_max
            parked_max = max(parked_max, await stack.parked_webhooks())

        timeout = options.timeout or default_timeout(sizes.backlog_events, 120.0)
        recorder = await profiling.start(options.profile, "backlog", run.children)
        try:
            watch = await wait_for_deliveries(
                receiver, sizes.backlog_events, timeout, run.children, "drain", every(1.0, tick)
            )
        finally:
            profiles = await profiling.finish(recorder)
    finally:
        await run.stop()
        broker_rss_kb = stack.broker_peak_rss_kb()
        stack.stop_broker()
    delivered = int(watch.stats["unique_ok"])
    first, last = watch.stats["first_at"], watch.stats["last_at"]
    drain_s = (last - up_at) if last else None
    params = {
        "events": sizes.backlog_events,
        "webhooks": sizes.backlog_webhooks,
        "down_s": sizes.down,
        "body_bytes": BACKLOG_BODY_BYTES,
        "env": BACKLOG_ENV,
        "timeout_s": timeout,
    }
    metrics = {
        "completed": watch.completed,
        "deliveries": delivered,
        "duplicates": watch.stats["duplicates"],
        "order_violations": watch.stats["order_violations"],
        "queue_publish_s": round(publish_s, 2),
        "route_s": round(routed_s, 2),
        "routed_tasks": routed,
        "first_delivery_after_up_s": round(first - up_at, 3) if first else None,
        "drain_s": round(drain_s, 3) if drain_s else None,
        "drain_per_s": round(rate(delivered, drain_s) or 0.0, 1) if drain_s else None,
        "deliverer_peak_rss_mb": round(run.deliverer.peak_rss_kb / MB, 1),
        "router_peak_rss_mb": round(run.router.peak_rss_kb / MB, 1),
        "broker_peak_rss_mb": round(broker_rss_kb / MB, 1),
        "parked_webhooks_max": parked_max,
        # P5 asks for the size: a smaller (--quick) run cannot meet it.
        "full_size": int(
            bool(watch.completed)
            and sizes.backlog_events >= 1_000_000
            and sizes.backlog_webhooks >= 10_000
        ),
    }
    if profiles:
        metrics["profile"] = profiles
    return finish("backlog", params, metrics)
