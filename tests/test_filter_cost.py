"""Filters cost little per event, whatever the filter and the event (issue 28).

Pure: the new refusals (arrays and objects larger than MAX_COMPOSITE_NODES, a cost
estimate over MAX_COST) name the place; the scan bound is part of the semantics; the
hashed membership agrees with JSON equality. Integration: another tenant's five
events, routed beside the issue's costly filter and beside a cheap one (numbers
printed, not asserted).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.bench.filter_cost import CASES, measure
from dispatcher.delivery.secrets import SecretBox
from dispatcher.kafka.producer import Producer
from dispatcher.messages.wire import Event
from dispatcher.router.router import Router
from dispatcher.settings import Settings
from dispatcher.store.webhook_store import update_webhook
from dispatcher.subscription.filters import (
    MAX_COMPOSITE_NODES,
    MAX_CONDITIONS,
    MAX_SCAN,
    compile_filter,
    event_view,
    json_equal,
    validate,
)
from tests.conftest import TenantKey
from tests.support.api import api_client, webhook_body
from tests.support.pipeline import ensure_mirror_topics, start_deliverer, start_router, wait_until
from tests.support.receiver import Receiver
from tests.test_router_filters import TOPIC, _webhook

ISSUE_FILTER: dict[str, Any] = {"data.x": {"$in": [[]] * 1355}}
ISSUE_DATA = {"x": [[0]] * 10_000}
WIDE = list(range(MAX_COMPOSITE_NODES))  # an array of 16 numbers: 17 values
ROUNDS = 3
NEAR_LIMIT = list(range(MAX_COMPOSITE_NODES - 2))  # 15 values: allowed, but costly


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ({"data.x": WIDE}, "/data.x", "at most 16 values"),
        ({"data.x": {"$eq": {"a": WIDE}}}, "/data.x/$eq", "at most 16 values"),
        ({"data.x": {"$ne": WIDE}}, "/data.x/$ne", "at most 16 values"),
        ({"data.x": {"$in": [1, WIDE]}}, "/data.x/$in/1", "at most 16 values"),
        ({"data.x": {"$nin": [[WIDE]]}}, "/data.x/$nin/0", "at most 16 values"),
        ({"data.a": NEAR_LIMIT, "data.b": NEAR_LIMIT}, "/data.b", "cost too much"),
        (
            {"$or": [{"data.a": {"$in": [NEAR_LIMIT]}}, {"data.b": {"$nin": [NEAR_LIMIT]}}]},
            "/$or/1/data.b/$nin",
            "cost too much",
        ),
    ],
)
def test_costly_comparisons_are_refused_naming_the_place(
    spec: dict[str, Any], path: str, words: str
) -> None:
    """Large arrays/objects to compare with, or too many of them, get the pointer."""
    problem = validate(spec)
    assert problem is not None
    assert (problem.path, words in problem.message) == (path, True)


@pytest.mark.parametrize(
    "spec",
    [
        {f"data.f{i}": {"$in": [i, "x"]} for i in range(MAX_CONDITIONS)},
        {"data.x": NEAR_LIMIT},
        {"data.customer": {"$eq": {"address": {"city": "Austin", "zip": "78701"}}}},
        ISSUE_FILTER,  # 1,355 empty arrays: one hash lookup per value, so it is cheap
    ],
)
def test_filters_within_the_bounds_are_accepted(spec: dict[str, Any]) -> None:
    """Every scalar filter the other limits allow fits the cost estimate."""
    assert validate(spec) is None


@pytest.mark.parametrize(
    ("data", "spec", "matches"),
    [
        ({"x": [0] * (MAX_SCAN - 2) + [5]}, {"data.x": 5}, True),
        ({"x": [0] * MAX_SCAN + [5]}, {"data.x": 5}, False),  # past the scan
        ({"x": [0] * MAX_SCAN + [5]}, {"data.x": {"$ne": 5}}, True),
        ({"x": [[0]] * 100 + [[]]}, ISSUE_FILTER, True),
        ({"x": [[0]] * MAX_SCAN + [[]]}, ISSUE_FILTER, False),
        ({"l": [{"s": "A"}] * (MAX_SCAN - 1) + [{"s": "B"}]}, {"data.l.s": "B"}, True),
        ({"l": [{"s": "A"}] * MAX_SCAN + [{"s": "B"}]}, {"data.l.s": "B"}, False),
        ({"x": [[1, True]]}, {"data.x": {"$in": [[1, True]]}}, True),
        ({"x": [[1, 1]]}, {"data.x": {"$in": [[1, True]]}}, False),
        ({"x": [[1.0, "a"]]}, {"data.x": {"$in": [[1, "a"]]}}, True),
        ({"x": {"b": [2], "a": None}}, {"data.x": {"a": None, "b": [2]}}, True),
        ({"x": {"a": [list(range(99))]}}, {"data.x": {"$eq": {"a": [[0]]}}}, False),
    ],
)
def test_a_condition_looks_at_the_first_max_scan_values(
    data: dict[str, Any], spec: dict[str, Any], matches: bool
) -> None:
    """Element-wise matching covers the first MAX_SCAN values a path reaches, no more."""
    assert compile_filter(spec)(event_view("T", "t", data)) is matches


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.0, 1.0, -1.5])
    | st.sampled_from(["", "a", "1"])
)
SMALL = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("ab"), inner),
    max_leaves=5,
)


@given(SMALL, st.lists(SMALL, max_size=4))
def test_hashed_membership_is_json_equality(stored: Any, choices: list[Any]) -> None:
    """$in over arrays and objects keyed canonically agrees with element-wise json_equal."""
    spec = {"data.v": {"$in": choices}}
    if validate(spec) is not None:
        return
    candidates = [stored, *(stored if isinstance(stored, list) else [])]
    expected = any(json_equal(value, choice) for value in candidates for choice in choices)
    assert compile_filter(spec)(event_view("T", "t", {"v": stored})) is expected


def test_bench_cases_are_filters_the_api_accepts() -> None:
    """The bench's worst cases pass validation (else they would not be worst cases)."""
    for name, build in CASES.items():
        spec, _ = build()
        assert validate(spec) is None, name
    figures = measure(rounds=1)
    assert figures["worst_us_per_event"] == max(figures[f"{name}_us_per_event"] for name in CASES)


async def _five_events_of_another_tenant(
    settings: Settings, tenant: TenantKey, other: TenantKey, rx: Receiver
) -> float:
    """Publish 10 costly events of ``tenant`` then 5 of ``other``; seconds until 5 arrive."""
    before = len(rx.on("other"))
    async with Producer(settings) as producer:
        for _ in range(10):
            await producer.publish(TOPIC, ISSUE_DATA, tenant.id)
        started = time.monotonic()
        for n in range(5):
            await producer.publish(TOPIC, {"n": n}, other.id)
        await wait_until(lambda: len(rx.on("other")) == before + 5, within=120)
    return time.monotonic() - started


async def test_a_costly_filter_does_not_delay_another_tenant(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """Another tenant's 5 events arrive beside the issue's filter as beside a cheap one."""
    await ensure_mirror_topics(settings, [TOPIC])
    async with Receiver() as rx:
        costly = await _webhook(pool, settings, tenant.id, rx.url_for("costly"), ISSUE_FILTER)
        await _webhook(pool, settings, other_tenant.id, rx.url_for("other"))
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        try:
            await _five_events_of_another_tenant(settings, tenant, other_tenant, rx)  # warm-up
            with_filter = [
                await _five_events_of_another_tenant(settings, tenant, other_tenant, rx)
                for _ in range(ROUNDS)
            ]
            await update_webhook(
                pool,
                SecretBox.from_setting(settings.secret_key),
                tenant.id,
                costly,
                {"filter": {"data.absent": 1}},
            )
            probe = Event(
                id="p", topic=TOPIC, tenant_id=tenant.id, triggered_at=1, data={"absent": 1}
            )
            service = router.service
            assert isinstance(service, Router)
            await wait_until(lambda: costly in service.index.matching(probe))
            without = [
                await _five_events_of_another_tenant(settings, tenant, other_tenant, rx)
                for _ in range(ROUNDS)
            ]
        finally:
            await deliverer.stop()
            await router.stop()
    assert rx.on("costly") == []  # neither filter matches the costly events
    costly_s, cheap_s = statistics.median(with_filter), statistics.median(without)
    print(
        f"\nanother tenant's 5 events (median of {ROUNDS}): {costly_s:.3f} s beside the"
        f" issue's filter, {cheap_s:.3f} s beside a cheap one (ratio {costly_s / cheap_s:.2f})"
    )


async def test_the_api_refuses_a_costly_filter_naming_the_place(
    settings: Settings, tenant: TenantKey
) -> None:
    """POST /webhooks with an over-large array to compare with: 422 at its pointer."""
    body = webhook_body("https://example.com/h", filter={"data.x": {"$in": [1, WIDE]}})
    async with api_client(settings) as client:
        response = await client.post("/webhooks", json=body, headers=tenant.headers)
        assert response.status == 422
        error = (await response.json())["error"]
    assert error["details"][0]["path"] == "/filter/data.x/$in/1"
