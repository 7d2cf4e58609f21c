"""Scenario 1, the ceiling: a bare aiohttp loop POSTing pre-built signed 1 KB bodies.

Same receiver, same concurrency as the dispatcher has (one request in flight per
ordered webhook), the same ``AiohttpSender`` session settings; no Kafka, no Postgres.
What the dispatcher adds on top of this is its overhead.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from dispatcher.bench.progress import Progress
from dispatcher.bench.results import ScenarioResult
from dispatcher.bench.stack import BENCH_TOPIC, Receiver, webhook_url
from dispatcher.bench.stats import per_item_us, rate
from dispatcher.bench.workload import event_data, pad_for
from dispatcher.events import Event, delivery_body
from dispatcher.secrets import generate_secret
from dispatcher.sender import AiohttpSender
from dispatcher.settings import Settings
from dispatcher.signing import sign_headers


def signed_requests(port: int, concurrency: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """One pre-built, signed request per worker: (url, body, headers)."""
    pad, secret = pad_for(), generate_secret()
    built = []
    for worker in range(concurrency):
        webhook_id = str(uuid.uuid4())
        event = Event(
            str(uuid.uuid4()), BENCH_TOPIC, "ten_bench", int(time.time()), event_data(0, pad)
        )
        body = delivery_body(event, webhook_id, "v1.0")
        headers = sign_headers([secret], event.id, int(time.time()), body)
        built.append((webhook_url(port, "ok", worker), body, headers))
    return built


async def run_ceiling(
    settings: Settings, receiver: Receiver, requests: int, concurrency: int
) -> ScenarioResult:
    """POST ``requests`` bodies with ``concurrency`` workers; requests/s and CPU/request."""
    params = {"requests": requests, "concurrency": concurrency}
    built = signed_requests(receiver.port, concurrency)
    params["body_bytes"] = len(built[0][1])
    sender = AiohttpSender(settings)
    remaining = requests
    done = 0
    failures = 0
    progress = Progress("ceiling", requests)

    async def worker(url: str, body: bytes, headers: dict[str, str]) -> None:
        nonlocal remaining, done, failures
        while remaining > 0:
            remaining -= 1
            response = await sender.send(url, body, headers)
            done += 1
            if not response.ok:
                failures += 1
            if done % 500 == 0:
                progress.update(done)

    try:
        # Warm the connection pool so connects are not part of the measurement.
        await asyncio.gather(*(sender.send(u, b, h) for u, b, h in built))
        receiver_cpu0 = receiver.child.cpu()
        cpu0, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(u, b, h) for u, b, h in built))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - cpu0
        receiver_cpu = receiver.child.cpu() - receiver_cpu0
    finally:
        await sender.close()
    progress.update(done)
    progress.close()
    return ScenarioResult(
        "ceiling",
        params=params,
        metrics={
            "requests": done,
            "failures": failures,
            "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(rate(done, elapsed) or 0.0, 1),
            "client_cpu_us_per_request": per_item_us(client_cpu, done),
            "receiver_cpu_us_per_request": per_item_us(receiver_cpu, done),
        },
    )
