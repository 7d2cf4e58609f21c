"""Static group membership (HOOKLANE_INSTANCE_ID) on Apache Kafka.

A deliverer restarted within its session timeout gets its partitions back, and the
other deliverer of the group is not disturbed: no group-wide rebalance. The group is
the test's own: static members outlive their process by the session timeout, and in
the shared ``hooklane-deliverer`` group they would stall other tests' rebalances.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dispatcher.settings import Settings
from tests.conftest import on_kafka
from tests.support.pipeline import Running, start_deliverer, wait_until


async def watch(running: Running, seen: list[frozenset[object]], done: asyncio.Event) -> None:
    """Record every assignment ``running`` goes through until ``done``."""
    while not done.is_set():
        current = frozenset(running.assignment)
        if not seen or seen[-1] != current:
            seen.append(current)
        await asyncio.sleep(0.005)


async def test_a_restarted_static_deliverer_keeps_its_partitions_without_a_rebalance(
    internal_topics: Settings,
) -> None:
    """Restart a static member: same partitions; the other member's never change."""
    if not on_kafka():
        pytest.skip("static membership is proven on Apache Kafka")
    group = f"static-{uuid.uuid4().hex[:8]}"
    first_settings = internal_topics.replace(instance_id="deliverer-a")
    first = await start_deliverer(first_settings, group_id=group, wait_assigned=False)
    second = await start_deliverer(
        internal_topics.replace(instance_id="deliverer-b"), group_id=group, wait_assigned=False
    )
    everything = set(range(internal_topics.deliveries_partitions))
    restarted: Running | None = None
    try:
        await wait_until(
            lambda: (
                bool(first.assignment and second.assignment)
                # disjoint: the first member may still list all four while the second
                # already holds its half (seen in CI: `owned` was all four)
                and not first.assignment & second.assignment
                and {tp.partition for tp in first.assignment | second.assignment} == everything
            ),
            90,
            message="both deliverers to share the partitions",
        )
        owned = set(first.assignment)
        seen: list[frozenset[object]] = []
        done = asyncio.Event()
        watcher = asyncio.create_task(watch(second, seen, done))
        await first.stop()  # static: no LeaveGroup
        restarted = await start_deliverer(first_settings, group_id=group, wait_assigned=False)
        await wait_until(lambda: bool(restarted.assignment), 60, message="the restart")
        await asyncio.sleep(1)  # a rebalance, if any, would show in the other's assignment
        done.set()
        await watcher
        assert set(restarted.assignment) == owned
        assert len(seen) == 1, f"the other member was rebalanced: {seen}"
    finally:
        for running in (first, second, restarted):
            if running is not None and not running.task.done():
                await running.stop()
