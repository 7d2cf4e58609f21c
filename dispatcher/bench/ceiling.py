"""Scenario 1, the ceiling: bare client loops POSTing pre-built signed 1 KB bodies.

Same receiver, same concurrency as the dispatcher has (one request in flight per
ordered webhook); no Kafka, no Postgres. Four clients, each in its own process so each
gets its own event loop: aiohttp's client and Hooklane's lean sender, each on asyncio's
loop and on uvloop. The headline (``requests_per_s``, ``client_cpu_us_per_request``)
is the bare aiohttp client on asyncio's default loop, as an outside user would run it;
``<variant>_requests_per_s`` and ``<variant>_cpu_us_per_request`` give all four
(variants ``aiohttp_asyncio``, ``aiohttp_uvloop``, ``fast_asyncio``, ``fast_uvloop``),
and ``like_for_like`` names the aiohttp variant on the loop the pipeline runs on.

``python -m dispatcher.bench.ceiling --port P --requests N --concurrency C --sender S
--loop L`` runs one client and prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from dispatcher.bench.results import ScenarioResult
from dispatcher.bench.stack import BENCH_TOPIC, Receiver, webhook_url
from dispatcher.bench.stats import per_item_us, rate
from dispatcher.bench.workload import event_data, pad_for
from dispatcher.delivery.http.factory import make_sender
from dispatcher.delivery.secrets import generate_secret
from dispatcher.delivery.signing import sign_headers
from dispatcher.messages.wire import Event, delivery_body
from dispatcher.runtime import event_loop
from dispatcher.settings import Settings

SENDERS = ("aiohttp", "fast")
LOOPS = ("asyncio", "uvloop")
HEADLINE = ("aiohttp", "asyncio")
VARIANT_FIGURES = ("requests_per_s", "client_cpu_us_per_request", "receiver_cpu_us_per_request")


def variant_name(sender: str, loop: str) -> str:
    """``aiohttp_asyncio``-style key of one client in ``variants``."""
    return f"{sender}_{loop}"


def pipeline_loop(setting: str) -> str:
    """The loop the pipeline's processes run on for an ``event_loop`` setting."""
    if setting != "auto":
        return setting
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


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


async def run_client(
    settings: Settings, port: int, requests: int, concurrency: int
) -> dict[str, Any]:
    """POST ``requests`` bodies with ``concurrency`` workers; requests/s and CPU/request."""
    built = signed_requests(port, concurrency)
    sender = make_sender(settings)
    remaining, done, failures = requests, 0, 0

    async def worker(url: str, body: bytes, headers: dict[str, str]) -> None:
        nonlocal remaining, done, failures
        while remaining > 0:
            remaining -= 1
            response = await sender.send(url, body, headers)
            done += 1
            if not response.ok:
                failures += 1

    try:
        # Warm the connection pool so connects are not part of the measurement.
        await asyncio.gather(*(sender.send(u, b, h) for u, b, h in built))
        cpu0, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(u, b, h) for u, b, h in built))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - cpu0
    finally:
        await sender.close()
    return {
        "requests": done,
        "failures": failures,
        "body_bytes": len(built[0][1]),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(rate(done, elapsed) or 0.0, 1),
        "client_cpu_us_per_request": per_item_us(client_cpu, done),
    }


async def _client_process(
    settings: Settings, receiver: Receiver, requests: int, concurrency: int, sender: str, loop: str
) -> dict[str, Any]:
    env = {**os.environ, "HOOKLANE_ALLOW_PRIVATE_TARGETS": "true"}
    receiver_cpu0 = receiver.child.cpu()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.bench.ceiling",
        *("--port", str(receiver.port), "--requests", str(requests)),
        *("--concurrency", str(concurrency), "--sender", sender, "--loop", loop),
        *("--timeout", str(settings.delivery_timeout_s)),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the {sender} client on {loop} failed: {err.decode()[-500:]}")
    figures: dict[str, Any] = orjson.loads(out)
    figures["receiver_cpu_us_per_request"] = per_item_us(
        receiver.child.cpu() - receiver_cpu0, figures["requests"]
    )
    return figures


async def run_ceiling(
    settings: Settings, receiver: Receiver, requests: int, concurrency: int
) -> ScenarioResult:
    """All four clients, one after the other, against the same receiver."""
    from dispatcher.bench.progress import Progress

    variants: dict[str, dict[str, Any]] = {}
    progress = Progress("ceiling", len(SENDERS) * len(LOOPS))
    for sender in SENDERS:
        for loop in LOOPS:
            variants[variant_name(sender, loop)] = await _client_process(
                settings, receiver, requests, concurrency, sender, loop
            )
            progress.update(len(variants))
    progress.close()
    headline = variants[variant_name(*HEADLINE)]
    loop = pipeline_loop(settings.event_loop)
    return ScenarioResult(
        "ceiling",
        params={
            "requests": requests,
            "concurrency": concurrency,
            "body_bytes": headline["body_bytes"],
            "headline": variant_name(*HEADLINE),
            "pipeline_loop": loop,
        },
        metrics={
            **{k: v for k, v in headline.items() if k != "body_bytes"},
            "like_for_like": variant_name("aiohttp", loop),
            **{
                f"{name}_{figure}": figures[figure]
                for name, figures in variants.items()
                for figure in VARIANT_FIGURES
            },
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """One client in this process, on the chosen loop; prints its figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m dispatcher.bench.ceiling")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--sender", choices=SENDERS, required=True)
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    settings = Settings(
        allow_private_targets=True,
        sender=args.sender,
        event_loop=args.loop,
        delivery_timeout_s=args.timeout,
    )
    figures = event_loop.run(
        run_client(settings, args.port, args.requests, args.concurrency), args.loop
    )
    sys.stdout.buffer.write(orjson.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
