"""The observability of a running stack: router and deliverer as real processes.

The deliverer's /metrics show the deliveries, the attempt durations, its consumer
lag draining to 0 and a parked lane while an endpoint is down; ``hooklane status
--json`` (a real process) shows the same stack's groups, lag and parked webhook.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.kafka.broker import free_port
from dispatcher.kafka.producer import Producer
from dispatcher.runtime.status import FAILING_LIMIT
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import failing_webhooks
from tests.conftest import TenantKey, migrated_database
from tests.support.pipeline import Spawned, create_webhook, ensure_mirror_topics, spawn, wait_until
from tests.support.receiver import Received, Receiver
from tests.test_cli import hooklane

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
N = 20


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database of this test's own: ``hooklane status`` reports on every webhook in it,
    and the session database holds other tests' failing webhooks."""
    with migrated_database("obs") as url:
        yield url


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(session: aiohttp.ClientSession, port: int) -> Samples:
    """Every sample of a process's /metrics, parsed with prometheus_client's parser."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls) in samples if n == name]


async def ready(session: aiohttp.ClientSession, port: int, checks: set[str]) -> bool:
    """/readyz answers 200 with exactly ``checks``, all passing."""
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            body = await response.json()
            return response.status == 200 and set(body["checks"]) == checks
    except aiohttp.ClientError:
        return False


async def test_stack_metrics_lag_parking_and_status(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Delivered and duration counts reach N, lag drains to 0, a dead endpoint parks."""
    await ensure_mirror_topics(settings, [TOPIC])
    router_port, deliverer_port = free_port(), free_port()
    processes: list[Spawned] = []
    async with Receiver() as rx, aiohttp.ClientSession() as session:

        def answer(received: Received) -> int:
            return 503 if received.path == "/down" else 200

        rx.respond = answer
        await create_webhook(pool, settings, tenant.id, rx.url_for("up"), [TOPIC])
        down = await create_webhook(pool, settings, tenant.id, rx.url_for("down"), [TOPIC])
        try:
            processes.append(
                await spawn("dispatcher.router", settings.replace(metrics_port=router_port))
            )
            # With the opt-in per-webhook gauges: the dead endpoint shows by id.
            labelled = settings.replace(metrics_port=deliverer_port, metrics_webhook_labels=True)
            processes.append(await spawn("dispatcher.deliverer", labelled))
            for port, checks in (
                (router_port, {"postgres", "kafka", "consumer_group"}),
                (deliverer_port, {"postgres", "kafka", "consumer_group"}),
            ):
                is_ready = functools.partial(ready, session, port, checks)
                await wait_until(is_ready, 60, 0.2, "readiness")
            async with Producer(settings) as producer:
                for n in range(N):
                    data = {"registration_id": f"reg_{n}"}
                    await producer.publish(TOPIC, data, tenant_id=tenant.id)
            await wait_until(lambda: len(rx.on("up")) >= N, 60, message="N deliveries")

            async def metrics_show_it() -> bool:
                samples = await scrape(session, deliverer_port)
                return (
                    total(samples, "hooklane_deliveries_total", outcome="delivered") >= N
                    and total(samples, "hooklane_attempt_duration_seconds_count", outcome="success")
                    >= N
                    and total(samples, "hooklane_lanes", state="parked") > 0
                    and total(samples, "hooklane_backlog_deliveries") > 0
                    and total(samples, "hooklane_webhook_backlog_deliveries", webhook_id=down.id)
                    > 0
                    and bool(series(samples, "hooklane_consumer_lag"))
                    and total(samples, "hooklane_consumer_lag") == 0
                )

            await wait_until(metrics_show_it, 60, 0.5, "deliverer metrics")
            samples = await scrape(session, deliverer_port)
            assert total(samples, "hooklane_attempts_total", outcome="http_error") > 0
            # Counted where the outcome is applied: the dead endpoint's lane was parked.
            assert total(samples, "hooklane_deliveries_total", outcome="parked") >= 1
            assert total(samples, "hooklane_attempt_log_rows_total", result="written") >= N
            assert total(samples, "hooklane_attempt_log_rows_total", result="dropped") == 0
            commits = "hooklane_commit_duration_seconds_count"
            assert total(samples, commits, group="hooklane-deliverer") > 0
            assert {s["group"] for s in series(samples, "hooklane_consumer_lag")} == {
                "hooklane-deliverer"
            }
            assert total(samples, "hooklane_build_info") == 1

            async def router_drained() -> bool:
                samples = await scrape(session, router_port)
                lag = series(samples, "hooklane_consumer_lag")
                mirror = settings.mirror_topic(TOPIC)
                return any(s["topic"] == mirror for s in lag) and (
                    total(samples, "hooklane_consumer_lag", topic=mirror) == 0
                )

            await wait_until(router_drained, 60, 0.5, "router lag 0")
            samples = await scrape(session, router_port)
            assert total(samples, "hooklane_events_routed_total", topic=TOPIC) >= N
            assert total(samples, commits, group="hooklane-router") > 0

            code, out, err = await hooklane(settings, "status", "--json")
            assert code == 0, err
            status: dict[str, Any] = json.loads(out)
            groups = {g["group"]: g for g in status["groups"]}
            deliverer = groups["hooklane-deliverer"]
            assert deliverer["members"] and deliverer["lag"]["total"] == 0
            assert set(deliverer["lag"]["partitions"]) == {
                f"{settings.deliveries_topic}/{p}" for p in range(settings.deliveries_partitions)
            }
            assert groups["hooklane-router"]["members"]
            assert status["backlog"]["parked_webhooks"] >= 1
            assert status["backlog"]["deliveries"] >= 1
            # The suite shares one database: webhooks of earlier tests may have been
            # failing longer and fill the list; it is exactly Postgres's ten longest.
            shown = [w["id"] for w in status["failing_webhooks"]]
            assert shown == [w.id for w in await failing_webhooks(pool, FAILING_LIMIT)]
            assert down.id in shown  # this test's own database: nobody else's failures
            assert status["last_minute"].get("success", 0) >= N
        finally:
            for process in processes:
                await process.terminate()
