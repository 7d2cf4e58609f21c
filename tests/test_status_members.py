"""``hooklane status`` names each group member's host and partitions on Apache Kafka.

tansu answers DescribeGroups without hosts or assignments (status then shows ``-`` and
``?``); Apache Kafka answers with both, and status shows them.
"""

from __future__ import annotations

import json

import pytest

from dispatcher.settings import Settings
from tests.conftest import on_kafka
from tests.support.pipeline import spawn_deliverer, wait_until
from tests.test_cli import hooklane


async def test_status_shows_a_deliverers_host_and_partitions(internal_topics: Settings) -> None:
    if not on_kafka():
        pytest.skip("tansu reports no member hosts or assignments")
    settings = internal_topics.replace(log_level="INFO")
    deliverer = await spawn_deliverer(settings, capture_logs=True)
    try:
        everything = set(range(settings.deliveries_partitions))
        await wait_until(lambda: deliverer.partitions == everything, 60, message="assignment")
        code, out, err = await hooklane(settings, "status", "--json")
        assert code == 0, err
        group = next(g for g in json.loads(out)["groups"] if g["group"] == "hooklane-deliverer")
        # The group may hold members of earlier tests' topics (static ones linger).
        topic = settings.deliveries_topic
        [member] = [
            m for m in group["members"] if any(p.startswith(topic) for p in m["partitions"])
        ]
        assert member["host"].strip("/") == "127.0.0.1"
        assert {int(p.rsplit("/", 1)[1]) for p in member["partitions"]} == everything
        code, text, err = await hooklane(settings, "status")
        assert code == 0, err
        assert "127.0.0.1" in text
    finally:
        await deliverer.terminate()
