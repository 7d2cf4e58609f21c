"""The dispatch loop's ready queue and in-flight slots (dispatcher.deliverer.dispatching)."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.deliverer.dispatching import ReadyQueue, Slots


async def test_the_ready_queue_is_fifo_and_wakes_its_consumer() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    queue.put("a")
    queue.put("b")
    assert [await queue.get(), await queue.get()] == ["a", "b"]
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put("c")
    assert await asyncio.wait_for(waiting, 1) == "c"
    assert len(queue) == 0


async def test_an_item_waits_in_the_ready_queue_at_most_once() -> None:
    """A lane put twice before its turn gets one turn; once taken it may be put again."""
    queue: ReadyQueue[str] = ReadyQueue()
    queue.put("a")
    queue.put("b")
    queue.put("a")
    assert "a" in queue and len(queue) == 2
    assert await queue.get() == "a"
    assert "a" not in queue
    queue.put("a")
    assert [await queue.get(), await queue.get()] == ["b", "a"]


async def test_a_cancelled_get_leaves_the_queue_usable() -> None:
    queue: ReadyQueue[int] = ReadyQueue()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queue.put(1)
    assert await asyncio.wait_for(queue.get(), 1) == 1


def free(slots: Slots) -> int:
    """How many slots can be taken now (observed by taking them, then given back)."""
    taken = 0
    while slots.take():
        taken += 1
    for _ in range(taken):
        slots.release()
    return taken


async def test_slots_limit_holders_and_serve_waiters_in_order() -> None:
    slots = Slots(2)
    assert slots.take() and slots.take()
    assert not slots.take() and free(slots) == 0
    served: list[str] = []

    async def wait(name: str) -> None:
        await slots.acquire()
        served.append(name)

    first, second = asyncio.create_task(wait("first")), asyncio.create_task(wait("second"))
    await asyncio.sleep(0)
    slots.release()
    await asyncio.sleep(0)
    assert served == ["first"]
    assert not slots.take()  # the freed slot went to the waiter, not to a newcomer
    slots.release()
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert served == ["first", "second"] and free(slots) == 0
    slots.release()
    slots.release()
    assert free(slots) == 2


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    """Cancelled before or after being handed a slot, a waiter never keeps one."""
    slots = Slots(1)
    assert slots.take()
    early = asyncio.create_task(slots.acquire())
    late = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    early.cancel()  # cancelled while waiting
    await asyncio.sleep(0)
    slots.release()  # skips the cancelled one: handed to ``late``
    late.cancel()  # cancelled after being handed the slot, before it ran
    for task in (early, late):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert free(slots) == 1  # ``late`` passed its slot back
    assert slots.take()


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)
