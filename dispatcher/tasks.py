"""Starting and stopping the background tasks of long-running components."""

from __future__ import annotations

import asyncio
import contextlib


async def until_ready(task: asyncio.Task[None], ready: asyncio.Event) -> None:
    """Wait until ``ready`` is set, or re-raise what ended ``task`` before that."""
    waiting = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiting.cancel()
        task.result()


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if any) and wait until it is gone."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
