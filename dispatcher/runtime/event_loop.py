"""Which event loop Hooklane's processes run on (``HOOKLANE_EVENT_LOOP``).

``auto`` picks uvloop where it imports (it roughly halves the CPU of the transport and
call-soon machinery the deliverer lives in) and asyncio's default loop elsewhere;
``uvloop`` insists on it; ``asyncio`` opts out. Every entry point (``hooklane
api|router|deliverer|up`` and the ``python -m`` forms) runs through ``run`` or
``new_loop`` so the choice is made in this one place.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dispatcher.settings import SettingsError

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# CPython collects its youngest generation every 700 allocations. A delivery allocates
# dozens of short-lived objects (its task, futures, dicts, the result), so the default
# runs a collection every few deliveries that finds almost nothing: ~5 µs a delivery
# in the worker's hot path. Cycles still die young, only after 50,000 allocations.
GC_THRESHOLDS = (50_000, 20, 20)


def loop_factory(choice: str) -> LoopFactory:
    """The loop constructor for an ``event_loop`` setting; SettingsError if unavailable."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SettingsError(
                "HOOKLANE_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        return asyncio.new_event_loop
    if choice not in {"auto", "uvloop"}:
        raise SettingsError(f"HOOKLANE_EVENT_LOOP: unknown loop {choice!r}")
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def new_loop(choice: str) -> asyncio.AbstractEventLoop:
    """A fresh loop of the chosen kind (for ``aiohttp.web.run_app(loop=...)``)."""
    return loop_factory(choice)()


def tune_gc() -> None:
    """For a long-running process: freeze what start-up allocated (imports, settings)
    out of the collector's view and collect the young generation less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the chosen loop (Python 3.11 has no ``loop_factory=``)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
