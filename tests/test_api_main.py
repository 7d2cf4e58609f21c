"""``python -m api``: serves on HOOKLANE_API_HOST/PORT and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp

from dispatcher.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_python_m_api_serves_and_exits_on_sigterm(settings: Settings):
    """The server answers /healthz, then exits 0 shortly after SIGTERM."""
    port = free_port()
    env = {
        **os.environ,
        "HOOKLANE_DATABASE_URL": settings.database_url,
        "HOOKLANE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "HOOKLANE_SECRET_KEY": settings.secret_key or "",
        "HOOKLANE_API_HOST": "127.0.0.1",
        "HOOKLANE_API_PORT": str(port),
        "HOOKLANE_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        healthy = None
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        healthy = (response.status, await response.json())
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        assert healthy == (200, {"status": "ok"})
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
