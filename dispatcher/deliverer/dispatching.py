"""The dispatch loop's two primitives, cheaper than asyncio's general ones per delivery.

- ``ReadyQueue``: lanes waiting for their turn, first in first out, each at most once
  (``in``). One consumer (the dispatch loop) and ``put`` from plain callbacks; ``get``
  returns without suspending while lanes wait.
- ``Slots``: the process-wide limit of requests in flight, first come first served.
  ``take()`` is a synchronous fast path; only at the limit does a caller wait.

``asyncio.Queue`` and ``asyncio.Semaphore`` serve many producers and consumers,
cancellation and ``join``; each delivery paid for that at four calls (put, get, acquire,
release; ``Semaphore.locked`` scans its waiters on every acquire): ~7% of the
deliverer's samples in a py-spy profile of the throughput scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class ReadyQueue(Generic[T]):
    """FIFO of ready items for one consumer task; an item is queued at most once."""

    __slots__ = ("_items", "_queued", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._queued: set[T] = set()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: T) -> bool:
        return item in self._queued

    def put(self, item: T) -> None:
        """Append ``item`` unless it is queued already; wakes the consumer if it waits."""
        if item in self._queued:
            return
        self._queued.add(item)
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> T:
        """The oldest item, waiting for one if there is none."""
        items = self._items
        while not items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        item = items.popleft()
        self._queued.discard(item)
        return item


class Slots:
    """At most ``limit`` holders at a time; waiters are served in arrival order."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a limit of at least 1 is needed")
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a slot now if one is free (and nobody waits for it first)."""
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting for one at the limit."""
        if self.take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() handed its slot over: _free is already counted
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as the cancellation came in: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have skipped it
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter if any, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
