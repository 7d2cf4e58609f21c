"""Running a long-lived process (router, deliverer) until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Service(Protocol):
    """A process body: ``run()`` works until ``stop()`` asks it to finish cleanly."""

    def stop(self) -> None: ...

    async def run(self) -> None: ...


async def run_until_signalled(service: Service) -> None:
    """Run ``service``; SIGINT/SIGTERM make it stop taking work, finish, commit and leave."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, service.stop)
    try:
        await service.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
