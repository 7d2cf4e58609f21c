"""``hooklane bench --soak``: ``hooklane up`` under a steady load, memory sampled over time.

Answers "which embedded broker should ``make run`` default to?" with the numbers the
choice rests on: start-up time, memory of every process of the stack after a long run
at a steady rate, and publish→receive latency, for the broker named by
``HOOKLANE_EMBEDDED_BROKER``. Run one broker per invocation::

    python -m dispatcher.bench.soak --broker kafka --seconds 3600 --rate 200 \\
        --out .bench/soak-kafka.json

Events are published to the mirror topic with Hooklane's producer (as a platform
service would), to one webhook of the dev tenant on the bench receiver. Every
``--every`` seconds the resident memory of each process under ``hooklane up`` is summed
by role and written with the latency of that window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil  # type: ignore[import-untyped]  # no stubs

from dispatcher.bench.stack import Receiver
from dispatcher.bench.stats import summarize
from dispatcher.kafka.broker import free_port
from dispatcher.kafka.producer import Outgoing, Producer
from dispatcher.runtime.supervisor import DEV_TENANT
from dispatcher.settings import Settings

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
BANNER_END = "Press Ctrl-C to stop."
MAX_BATCH = 500  # events per send: a slow broker makes the run fall behind, not pile up
ROLES = ("java", "tansu", "router", "deliverer", "api", "postgres")


def role_of(cmdline: Sequence[str]) -> str:
    """Which part of the stack a process is, from its command line."""
    line = " ".join(cmdline)
    return next((name for name in ROLES if name in line), "supervisor")


def memory_by_role(root: psutil.Process) -> dict[str, int]:
    """Resident bytes of ``root`` and its descendants, summed per role."""
    totals: dict[str, int] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            rss = process.memory_info().rss
            name = role_of(process.cmdline())
        except (psutil.Error, OSError):
            continue
        totals[name] = totals.get(name, 0) + rss
    return totals


def banner_value(banner: str, label: str) -> str:
    """The value after ``label:`` in the ``Hooklane is up.`` banner."""
    for line in banner.splitlines():
        head, _, rest = line.strip().partition(":")
        if head == label and rest.strip():
            return rest.split()[0]
    raise RuntimeError(f"the banner has no {label!r} line:\n{banner}")


def start_stack(
    broker: str, database_url: str, log: Path, extra: Sequence[str] = ()
) -> tuple[Any, str, str, str, float]:
    """``hooklane up`` on ``broker``: (process, API URL, dev key, bootstrap, seconds up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLANE_")}
    api_port = free_port()
    env.update(
        HOOKLANE_EMBEDDED_BROKER=broker,
        HOOKLANE_DATABASE_URL=database_url,
        HOOKLANE_API_PORT=str(api_port),
        HOOKLANE_METRICS_PORT=str(free_port()),
        HOOKLANE_ALLOW_PRIVATE_TARGETS="true",
    )
    env.update(item.partition("=")[::2] for item in extra)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "up"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    while BANNER_END not in log.read_text():
        if process.poll() is not None or time.monotonic() - started > 300:
            raise RuntimeError("hooklane up did not come up:\n" + log.read_text()[-3000:])
        time.sleep(0.1)
    banner = log.read_text()
    return (
        process,
        f"http://127.0.0.1:{api_port}",
        banner_value(banner, "Dev API key"),
        banner_value(banner, "Kafka"),
        time.monotonic() - started,
    )


def outgoing(first: int, count: int) -> list[Outgoing]:
    """Events ``first`` .. ``first + count - 1`` of the dev tenant, stamped now."""
    now = time.time()
    return [
        Outgoing(TOPIC, {"registration_id": f"reg_{seq}", "seq": seq, "sent_at": now}, DEV_TENANT)
        for seq in range(first, first + count)
    ]


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(args.out).with_suffix(".logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()
    await receiver.start(dict(os.environ), log_dir)
    process, api, key, bootstrap, startup = await asyncio.to_thread(
        start_stack, args.broker, args.database_url, log_dir / "up.out", args.env
    )
    root = psutil.Process(process.pid)
    idle = memory_by_role(root)
    headers = {"Authorization": f"Bearer {key}"}
    windows: list[dict[str, Any]] = []
    published = 0
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    try:
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            Producer(settings) as producer,
        ):
            url = f"http://127.0.0.1:{receiver.port}/ok/0"
            async with session.post(f"{api}/webhooks", json={"url": url, "topics": [TOPIC]}) as r:
                r.raise_for_status()
            begin = time.monotonic()
            next_sample = begin + args.every
            seen = 0
            while (now := time.monotonic()) < begin + args.seconds:
                due = min(int((now - begin) * args.rate) - published, MAX_BATCH)
                if due > 0:
                    await producer.publish_many(outgoing(published, due))
                    published += due
                if now >= next_sample:
                    latencies = await receiver.samples("latencies")
                    window = latencies[seen:]
                    seen = len(latencies)
                    windows.append(
                        {
                            "t": round(now - begin),
                            "rss_mib": {
                                k: round(v / 2**20, 1) for k, v in memory_by_role(root).items()
                            },
                            "delivered": seen,
                            "latency_ms": summarize(window, 1000),
                        }
                    )
                    print(orjson.dumps(windows[-1]).decode(), flush=True)
                    next_sample += args.every
                await asyncio.sleep(0.01)
            await asyncio.sleep(10)
            received = (await receiver.stats()).get("unique_ok")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        await receiver.stop()
    return {
        "broker": args.broker,
        "rate": args.rate,
        "seconds": args.seconds,
        "env": args.env,
        "startup_s": round(startup, 2),
        "idle_rss_mib": {k: round(v / 2**20, 1) for k, v in idle.items()},
        "published": published,
        "behind": int(args.seconds * args.rate) - published,
        "received": received,
        "windows": windows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatcher.bench.soak")
    parser.add_argument("--broker", choices=("tansu", "kafka"), required=True)
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--every", type=float, default=60)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for hooklane up (repeatable)"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(soak(args))
    Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    summary = {k: v for k, v in result.items() if k != "windows"}
    summary["last"] = result["windows"][-1] if result["windows"] else None
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
