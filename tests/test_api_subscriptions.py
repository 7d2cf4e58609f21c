"""Subscription fields on /webhooks: filter, rate_limit, retry, PAUSED, buffered, concurrency."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

from dispatcher.store.webhook_store import set_concurrency
from tests.support.api import Client, api_client, assert_matches, webhook_body
from tests.test_api_webhooks import URL, create

FILTER = {"data.amount": {"$gte": 100}, "$or": [{"data.country": "US"}, {"data.country": "CA"}]}


@pytest.fixture
async def client(settings) -> AsyncIterator[Client]:
    # The operator's bounds for retry overrides: delays up to 1h, a window up to 3 days.
    bounded = dataclasses.replace(
        settings, retry_schedule=(1.0, 5.0, 60.0, 3600.0), retry_window=3 * 86400.0
    )
    async with api_client(bounded) as running:
        yield running


async def test_create_and_read_the_subscription_fields(client, tenant):
    """filter, rate_limit, retry and PAUSED are stored and returned as given."""
    created = await create(
        client,
        tenant,
        filter=FILTER,
        rate_limit={"per_second": 5},
        retry={"schedule": "1s,5s,1m", "window": "1d"},
        state="PAUSED",
    )
    assert_matches("WebhookCreated", created)
    read = await (await client.get(f"/webhooks/{created['id']}", headers=tenant.headers)).json()
    assert_matches("Webhook", read)
    for body in (created, read):
        assert body["filter"] == FILTER
        assert body["rate_limit"] == {"per_second": 5}
        assert body["retry"] == {"schedule": "1s,5s,1m", "window": "1d"}
        assert body["state"] == "PAUSED"
        assert (body["buffered"], body["concurrency"]) == (0, 1)


async def test_defaults_are_null_and_unordered_concurrency_starts_at_one(client, tenant):
    """Without the fields they are null; an unordered webhook's window starts at 1."""
    created = await create(client, tenant, ordering="unordered", max_in_flight=8)
    assert (created["filter"], created["rate_limit"], created["retry"]) == (None, None, None)
    assert created["concurrency"] == 1


async def test_concurrency_shows_the_reported_window_within_max_in_flight(client, tenant, pool):
    """The deliverer's reported window is shown, capped by max_in_flight; ordered shows 1."""
    created = await create(client, tenant, ordering="unordered", max_in_flight=8)
    path = f"/webhooks/{created['id']}"
    await set_concurrency(pool, created["id"], 5)
    read = await (await client.get(path, headers=tenant.headers)).json()
    assert read["concurrency"] == 5
    for change, shown in (({"max_in_flight": 3}, 3), ({"ordering": "ordered"}, 1)):
        response = await client.post(path, json=change, headers=tenant.headers)
        assert (await response.json())["concurrency"] == shown


async def test_update_sets_and_clears_the_fields(client, tenant):
    """A partial update changes one field and null clears it, leaving the others."""
    created = await create(client, tenant, filter=FILTER, rate_limit={"per_minute": 60})
    path = f"/webhooks/{created['id']}"
    response = await client.post(path, json={"filter": None}, headers=tenant.headers)
    assert response.status == 200
    updated = await response.json()
    assert updated["filter"] is None
    assert updated["rate_limit"] == {"per_minute": 60}
    response = await client.post(
        path, json={"state": "PAUSED", "filter": {"topic": "X.Y"}}, headers=tenant.headers
    )
    updated = await response.json()
    assert (updated["state"], updated["filter"]) == ("PAUSED", {"topic": "X.Y"})
    listed = await (
        await client.get("/webhooks", params={"state": "PAUSED"}, headers=tenant.headers)
    ).json()
    assert [w["id"] for w in listed["data"]] == [created["id"]]


async def test_buffered_counts_the_backlog(client, tenant, pool):
    """buffered is the number of backlog rows of the webhook."""
    created = await create(client, tenant, state="PAUSED")
    for n in range(2):
        await pool.execute(
            "INSERT INTO backlog (webhook_id, event_id, task) VALUES ($1, $2, '{}')",
            uuid.UUID(created["id"]),
            f"evt_{n}",
        )
    read = await (await client.get(f"/webhooks/{created['id']}", headers=tenant.headers)).json()
    assert read["buffered"] == 2


BAD = [
    ({"filter": {"data.x": {"$regex": "a"}}}, "/filter/data.x/$regex", "unknown operator"),
    ({"filter": {"amount": 1}}, "/filter/amount", "not a field"),
    ({"filter": {"data.x": {"$gt": [1]}}}, "/filter/data.x/$gt", "number or a string"),
    ({"filter": {"data.x": {"$exists": "yes"}}}, "/filter/data.x/$exists", "true or false"),
    ({"filter": {"$or": [{"data.x": {"$in": 3}}]}}, "/filter/$or/0/data.x/$in", "list"),
    ({"filter": [1]}, "/filter", "object"),
    (
        {"filter": {"$and": [{"$and": [{"$and": [{"$and": [{"$and": [{"data.x": 1}]}]}]}]}]}},
        "/filter/$and/0/$and/0/$and/0/$and/0",
        "nests at most",
    ),
    ({"rate_limit": {"per_second": 0}}, "/rate_limit", "whole number n >= 1"),
    ({"rate_limit": {"per_second": 1, "per_minute": 1}}, "/rate_limit", "per_second"),
    ({"rate_limit": {"per_hour": 1}}, "/rate_limit", "per_minute"),
    ({"rate_limit": {"per_second": 1.5}}, "/rate_limit", "whole number"),
    ({"retry": {"schedule": "1s,1d"}}, "/retry/schedule", "longer than this operator allows"),
    ({"retry": {"window": "30d"}}, "/retry/window", "HOOKLANE_RETRY_WINDOW"),
    ({"retry": {"schedule": "soon"}}, "/retry/schedule", "not a duration"),
    ({"retry": {"every": "1s"}}, "/retry/every", "unknown field"),
]


@pytest.mark.parametrize(("fields", "path", "words"), BAD)
async def test_create_rejects_bad_subscription_fields_and_saves_nothing(
    client, tenant, pool, fields, path, words
):
    """Each bad field is a 422 naming its path, and no webhook is created."""
    response = await client.post(
        "/webhooks", json=webhook_body(URL, **fields), headers=tenant.headers
    )
    assert response.status == 422
    details = (await response.json())["error"]["details"]
    assert path in [d["path"] for d in details], details
    assert any(words in d["message"] for d in details), details
    assert await pool.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant.id) == 0


@pytest.mark.parametrize(("fields", "path", "words"), BAD)
async def test_update_rejects_bad_subscription_fields_and_changes_nothing(
    client, tenant, fields, path, words
):
    """A bad field in an update is a 422 naming its path; the webhook keeps every value."""
    created = await create(client, tenant, filter=FILTER, name="before")
    url = f"/webhooks/{created['id']}"
    response = await client.post(url, json={"name": "after", **fields}, headers=tenant.headers)
    assert response.status == 422
    assert path in [d["path"] for d in (await response.json())["error"]["details"]]
    read = await (await client.get(url, headers=tenant.headers)).json()
    assert (read["name"], read["filter"], read["updated_at"]) == (
        "before",
        FILTER,
        created["updated_at"],
    )


async def test_resuming_a_paused_webhook_resets_its_failure_streak(client, tenant, pool):
    """Time paused is not time failing: ENABLED after PAUSED starts a fresh streak."""
    created = await create(client, tenant)
    await pool.execute(
        "UPDATE webhooks SET state = 'PAUSED', consecutive_failures = 7,"
        " failing_since = now() - interval '6 days' WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    response = await client.post(
        f"/webhooks/{created['id']}", json={"state": "ENABLED"}, headers=tenant.headers
    )
    assert (await response.json())["consecutive_failures"] == 0
    failing_since = await pool.fetchval(
        "SELECT failing_since FROM webhooks WHERE id = $1", uuid.UUID(created["id"])
    )
    assert failing_since is None
