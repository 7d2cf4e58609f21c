"""Fuzzed, not hoped: no record, however hostile, escapes the router's per-record path.

Hypothesis feeds ``Router.take`` (admission with real Postgres, filters, encoding, the
produce to the test broker) synthetic records: arbitrary bytes and adversarial JSON
(``tests/support/fuzz_json.py``). Every record ends routed or dead-lettered, counted once in
the router's metrics; ``take`` never raises and always moves the partition on. The
same for the deliverer's task decoding: a task decodes, re-encodes and renders its
delivery body, or is refused with ``InvalidMessage``, nothing else.

``make test`` runs Hypothesis' default example count; ``make fuzz`` the ``fuzz`` profile
(tests/conftest.py), thousands per test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dispatcher.messages.wire import DeliveryTask, InvalidMessage, delivery_body
from dispatcher.ops.metrics import RouterMetrics, build_registry
from dispatcher.router.router import Router
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.fuzz_json import event_text, record_values, task_text
from tests.support.pipeline import create_webhook, ensure_mirror_topics, start_router

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
UNIQUE = "@@unique@@"  # replaced by a fresh id per run: an example replayed is no repeat
SHARED = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


class Fed:
    """A started router fed batches by hand (it owns no partition of its own)."""

    def __init__(self, router: Router, metrics: Any, kafka_topic: str) -> None:
        self.router = router
        self.registry = metrics
        self.partition = TopicPartition(kafka_topic, 0)
        self.offset = 0

    def outcomes(self) -> dict[str, float]:
        """Records so far by outcome, from the router's own counters: ``routed`` and
        ``dead:<reason>``."""
        counts: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "hooklane_events_routed_total":
                    counts["routed"] = counts.get("routed", 0.0) + sample.value
                elif sample.name == "hooklane_events_dead_lettered_total":
                    counts["dead:" + sample.labels["reason"]] = sample.value
        return counts

    def records(self, values: list[tuple[bytes | None, bytes | None]]) -> list[ConsumerRecord]:
        made = []
        for key, value in values:
            if value is not None:
                value = value.replace(UNIQUE.encode(), uuid.uuid4().hex.encode())
            made.append(
                ConsumerRecord(
                    self.partition.topic,
                    0,
                    self.offset,
                    0,
                    0,
                    key,
                    value,
                    None,
                    len(key or b""),
                    len(value or b""),
                    [],
                )
            )
            self.offset += 1
        return made


@pytest.fixture
async def fed(settings: Settings, pool: asyncpg.Pool, tenant: TenantKey) -> AsyncIterator[Fed]:
    await ensure_mirror_topics(settings, [TOPIC])
    # Routed events need a recipient, so the filter and the task encoding run too.
    await create_webhook(pool, settings, tenant.id, "http://127.0.0.1:9/never", [TOPIC])
    families = build_registry(("router",))
    running = await start_router(
        settings, wait_assigned=False, metrics=RouterMetrics(families, "fuzz")
    )
    assert isinstance(running.service, Router)
    yield Fed(running.service, families.registry, settings.mirror_topic(TOPIC))
    await running.stop()


def _values(tenant_id: str) -> st.SearchStrategy[list[tuple[bytes | None, bytes | None]]]:
    text = event_text(TOPIC, [tenant_id, "ten_unknown"], UNIQUE)
    keys = st.one_of(st.none(), st.binary(max_size=40), st.just(tenant_id.encode()))
    return st.lists(st.tuples(keys, record_values(text)), min_size=1, max_size=4)


@SHARED
@given(data=st.data())
async def test_every_record_is_routed_or_dead_lettered(fed: Fed, tenant: TenantKey, data) -> None:
    """``take`` never raises, moves the partition on, and accounts for each record once."""
    records = fed.records(data.draw(_values(tenant.id)))
    before = fed.outcomes()
    assert await fed.router.take({fed.partition: records}) is True
    assert fed.router.committable()[fed.partition] == records[-1].offset + 1
    grown = {name: n - before.get(name, 0.0) for name, n in fed.outcomes().items()}
    assert sum(grown.values()) == len(records)
    for name, n in grown.items():
        if n:
            event(name)  # the spread of outcomes, for --hypothesis-show-statistics


def _task_values() -> st.SearchStrategy[bytes | None]:
    return record_values(task_text(event_text(TOPIC, ["ten_a"], "id")))


@SHARED
@given(_task_values())
def test_task_decoding_accepts_or_refuses_nothing_else(value: bytes | None) -> None:
    """A task decodes (and encodes again, and renders its body) or raises InvalidMessage."""
    try:
        task = DeliveryTask.from_message(value)
    except InvalidMessage as exc:
        assert exc.reason and exc.category
        return
    assert DeliveryTask.from_message(task.to_message()) == task
    assert delivery_body(task.event, task.webhook_id, "v1.0")


async def test_a_record_at_the_size_limit_is_dead_lettered_truncated(fed: Fed) -> None:
    """A value the dead-letter headers push over the producer's limit still moves on."""
    size = 1024 * 1024 - 100  # fits the broker as read; not with the headers added
    records = fed.records([(b"k" * 50, b"x" * size)])
    before = sum(fed.outcomes().values())
    assert await fed.router.take({fed.partition: records}) is True
    assert sum(fed.outcomes().values()) - before == 1
