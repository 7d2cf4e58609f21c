"""The broker floor's null pipeline against the real embedded broker: every event of a
paced publish reaches the null deliverer once per webhook, with its latency measured."""

from __future__ import annotations

from dispatcher.bench.floor import broker_floor
from dispatcher.bench.stack import BENCH_TOPIC
from dispatcher.kafka.topic_admin import create_topics


async def test_null_pipeline_delivers_every_event_to_every_webhook(settings):
    settings = settings.replace(fetch_max_wait_ms=20)
    await create_topics(settings, [BENCH_TOPIC])
    calls = iter(range(100))

    result = await broker_floor(
        settings,
        lambda: float(next(calls)),  # CPU seconds so far: one more per call
        rate_per_s=20.0,
        duration_s=1.0,
        webhooks=6,
        fanout=3,
        wait_s=30.0,
    )

    assert result.expected == 20 * 3
    assert len(result.latencies) == result.expected
    assert all(0.0 < latency < 30.0 for latency in result.latencies)
    metrics = result.metrics()
    assert metrics["broker_floor_missing"] == 0
    assert metrics["broker_floor_p50_ms"] <= metrics["broker_floor_p99_ms"]
    assert metrics["broker_floor_broker_core_share"] > 0
