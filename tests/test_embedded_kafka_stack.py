"""``hooklane up`` on the embedded Apache Kafka (``HOOKLANE_EMBEDDED_BROKER=kafka``).

The stack comes up on a Kafka node of its own (one KRaft node, the pinned release), a
webhook registered through the API gets an event published through the API, and
Ctrl-C stops everything, the broker included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.kafka.broker import free_port
from tests.conftest import on_kafka
from tests.support.pipeline import wait_until
from tests.support.readme_walkthrough import banner_value
from tests.support.receiver import Receiver

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not on_kafka(), reason="Java 17+ and Maven run the embedded Kafka"),
]

BANNER_END = "Press Ctrl-C to stop."


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[tuple[str, str, str]]:
    """``hooklane up`` with the embedded Kafka: (API URL, dev API key, bootstrap)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLANE_")}
    api_port, metrics_port = free_port(), free_port()
    env.update(
        HOOKLANE_EMBEDDED_BROKER="kafka",
        HOOKLANE_DATABASE_URL=database_url,
        HOOKLANE_API_PORT=str(api_port),
        HOOKLANE_METRICS_PORT=str(metrics_port),
        HOOKLANE_ALLOW_PRIVATE_TARGETS="true",
        HOOKLANE_TOPIC_PREFIX=f"up{os.getpid()}.",
    )
    out = (tmp_path / "up.out").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "up"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        banner = ""
        while BANNER_END not in banner:
            assert process.poll() is None, (tmp_path / "up.out").read_text()[-3000:]
            assert time.monotonic() < deadline, banner[-3000:]
            time.sleep(0.5)
            banner = (tmp_path / "up.out").read_text()
        yield (
            f"http://127.0.0.1:{api_port}",
            banner_value(banner, "Dev API key"),
            banner_value(banner, "Kafka"),
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        assert code == 0, (tmp_path / "up.out").read_text()[-3000:]


def call(method: str, url: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
        return answer


async def test_make_run_on_the_embedded_kafka_delivers(stack: tuple[str, str, str]) -> None:
    api, key, bootstrap = stack
    assert bootstrap.startswith("127.0.0.1:")
    async with Receiver() as rx:
        topic = "REGISTRATIONS.NEW.SUCCEEDED"
        await asyncio.to_thread(
            call, "POST", f"{api}/webhooks", key, {"url": rx.url, "topics": [topic]}
        )
        data = {"registration_id": "reg_1", "jurisdiction": "US-TX"}
        published = await asyncio.to_thread(
            call, "POST", f"{api}/events", key, {"topic": topic, "data": data}
        )
        await wait_until(lambda: published["id"] in rx.event_ids(), 60, message="the event")
