"""Chaos on a three-node Apache Kafka cluster (``make chaos``): brokers fail, restart, pause.

Replication 3 and ``min.insync.replicas`` 2 for every topic Hooklane creates, producers
with ``acks=all``. Events stream to 100 webhooks (every 20th failing until the
disruption is over, so parked meanwhile) through a router and a deliverer running as
processes; the harness never restarts them. The recovery time (until every delivery
owed to a healthy webhook at the disruption's end has arrived) leaves the parked ones
out: theirs is the parked retry schedule. Each scenario checks that nothing is lost,
that every webhook first received the events in publish order, and that no process died.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.settings import Settings
from tests.chaos.cluster import (
    NodeOps,
    freeze_deliveries_leader,
    kill_controller,
    kill_deliveries_leader,
    rolling_restart,
)
from tests.chaos.scenarios import Disruption, Failing, run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
WEBHOOKS = 100
FAILING_EVERY = 20
RATE = 3.0  # events/s, so 300 deliveries/s: what 2 shared cores sustain beside 3 JVMs
MAX_EVENTS = 5000  # publishing stops TAIL_S after the disruption, far below this
TAIL_S = 5.0

Make = Callable[[NodeOps, Settings], Disruption]
SCENARIOS: dict[str, tuple[str, Make]] = {
    "leader-kill": (
        "kill -9 deliveries leader, back after 20 s",
        lambda ops, settings: kill_deliveries_leader(ops, settings, 20.0),
    ),
    "controller-kill": (
        "kill -9 active controller, back after 10 s",
        lambda ops, settings: kill_controller(ops, 10.0),
    ),
    "rolling-restart": ("rolling restart of 3 nodes", lambda ops, settings: rolling_restart(ops)),
    "leader-freeze": (
        "SIGSTOP deliveries leader 15 s",
        lambda ops, settings: freeze_deliveries_leader(ops, settings, 15.0),
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_cluster(
    cluster: ApacheKafkaBroker, cluster_settings: Settings, tmp_path: Path, scenario: str
) -> None:
    """The disruption leaves nothing lost, nothing reordered and every process running."""
    label, make = SCENARIOS[scenario]
    settings = cluster_settings.replace(park_after=1.0)
    failing = Failing({f"hook{n}" for n in range(0, WEBHOOKS, FAILING_EVERY)})
    ops = NodeOps(cluster)
    try:
        await run_scenario(
            f"3 nodes: {label}",
            settings,
            tmp_path,
            make(ops, settings),
            events=MAX_EVENTS,
            rate=RATE,
            webhooks=WEBHOOKS,
            respond=failing.respond,
            ordered=True,
            tail_s=TAIL_S,
            after=failing.recover,
            unhealthy=frozenset(failing.paths),
        )
    finally:
        print("cluster:", "; ".join(ops.log))
        ops.close()
