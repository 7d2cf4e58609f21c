"""Static group membership (HOOKLANE_INSTANCE_ID) on Apache Kafka.

A deliverer restarted within its session timeout gets its partitions back, and the
other deliverer of the group is not disturbed: no group-wide rebalance.
"""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.kafka.broker import free_port
from dispatcher.settings import Settings
from tests.conftest import on_kafka
from tests.pipeline_helpers import Spawned, spawn_deliverer, wait_until

ASSIGNMENT_EVENTS = {"deliverer.partitions_assigned", "deliverer.partitions_released"}


def assignment_changes(process: Spawned) -> list[dict[str, Any]]:
    return [line for line in process.logs if line.get("event") in ASSIGNMENT_EVENTS]


async def start(settings: Settings, instance_id: str) -> Spawned:
    return await spawn_deliverer(
        settings.replace(instance_id=instance_id, metrics_port=free_port()), capture_logs=True
    )


async def test_a_restarted_static_deliverer_keeps_its_partitions_without_a_rebalance(
    internal_topics: Settings,
) -> None:
    """Restart a static member: same partitions; the other member sees no reassignment."""
    if not on_kafka():
        pytest.skip("static membership is proven on Apache Kafka")
    settings = internal_topics.replace(log_level="INFO")
    everything = set(range(settings.deliveries_partitions))
    first = await start(settings, "deliverer-a")
    second = await start(settings, "deliverer-b")
    restarted: Spawned | None = None
    try:
        await wait_until(
            lambda: (
                bool(first.partitions and second.partitions)
                and first.partitions | second.partitions == everything
            ),
            90,
            message="both deliverers to share the partitions",
        )
        owned = set(first.partitions)
        changes_before = len(assignment_changes(second))
        assert await first.terminate() == 0
        restarted = await start(settings, "deliverer-a")
        await wait_until(lambda: bool(restarted.partitions), 60, message="the restarted deliverer")
        assert restarted.partitions == owned
        assert second.partitions == everything - owned
        assert len(assignment_changes(second)) == changes_before, "the other was rebalanced"
    finally:
        for process in (first, second, restarted):
            if process is not None:
                await process.terminate()
