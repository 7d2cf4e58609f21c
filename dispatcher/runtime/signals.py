"""Running a long-lived process (router, deliverer) until SIGINT or SIGTERM.

The signals are caught from the start of the process (``stop_signals``), not only once
the service runs: a SIGTERM that arrives while a process is still connecting (a pod
stopped during start-up) ends it cleanly, with exit code 0, instead of killing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Protocol

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Service(Protocol):
    """A process body: ``run()`` works until ``stop()`` asks it to finish cleanly."""

    def stop(self) -> None: ...

    async def run(self) -> None: ...


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """Within the block, SIGINT and SIGTERM set the event it gives (no default action)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    try:
        yield stopping
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)


async def run_until_signalled(service: Service, stopping: asyncio.Event | None = None) -> None:
    """Run ``service``; SIGINT/SIGTERM make it stop taking work, finish, commit and leave.

    ``stopping``: the event of an enclosing ``stop_signals`` (set already: the service
    is not run at all).
    """
    with contextlib.ExitStack() as stack:
        if stopping is None:
            stopping = stack.enter_context(stop_signals())
        if stopping.is_set():
            return
        watcher = asyncio.create_task(_stop_when(stopping, service))
        try:
            await service.run()
        finally:
            watcher.cancel()


async def _stop_when(stopping: asyncio.Event, service: Service) -> None:
    await stopping.wait()
    service.stop()
