"""POST/GET/DELETE /webhooks against the real Postgres: CRUD, validation, paging, isolation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from dispatcher.delivery.secrets import SecretBox
from dispatcher.delivery.signing import signing_key
from tests.conftest import TenantKey
from tests.support.api import (
    GIVEN_SECRET,
    OTHER_TOPIC,
    TOPIC,
    Client,
    api_client,
    assert_matches,
    webhook_body,
)

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
async def client(settings) -> AsyncIterator[Client]:
    async with api_client(settings) as running:
        yield running


async def create(client: Client, tenant: TenantKey, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/webhooks", json=webhook_body(URL, **fields), headers=tenant.headers
    )
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def test_create_returns_the_webhook_with_defaults_and_generated_secret(client, tenant):
    """A minimal body creates an ENABLED, ordered v1.0 webhook and returns a whsec_ secret once."""
    response = await client.post("/webhooks", json=webhook_body(URL), headers=tenant.headers)
    assert response.status == 201
    created = await response.json()
    assert_matches("WebhookCreated", created)
    assert response.headers["Location"] == f"/webhooks/{created['id']}"
    assert uuid.UUID(created["id"]).version == 4
    assert created["url"] == URL
    assert created["topics"] == [TOPIC]
    assert (created["state"], created["api_version"], created["ordering"]) == (
        "ENABLED",
        "v1.0",
        "ordered",
    )
    assert created["max_in_flight"] == 1
    assert created["name"] is None
    assert created["backlog"] == 0
    assert created["created_at"].endswith("Z") and created["created_at"] == created["updated_at"]
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(signing_key(secret)) == 32
    assert created["secret_preview"] == "…" + secret[-4:]


async def test_generated_secret_is_never_returned_again(client, tenant):
    """After creation, GET, list and update responses carry no secret, only its preview."""
    created = await create(client, tenant)
    secret = created["secret"]
    responses = [
        await client.get(f"/webhooks/{created['id']}", headers=tenant.headers),
        await client.get("/webhooks", headers=tenant.headers),
        await client.post(f"/webhooks/{created['id']}", json={"name": "x"}, headers=tenant.headers),
    ]
    for response in responses:
        text = await response.text()
        assert response.status == 200
        assert secret not in text and '"secret"' not in text
        assert created["secret_preview"] in text


async def test_given_secret_is_never_returned(client, tenant):
    """A secret supplied by the tenant is not echoed back, even at creation."""
    response = await client.post(
        "/webhooks", json=webhook_body(URL, secret=GIVEN_SECRET), headers=tenant.headers
    )
    text = await response.text()
    assert response.status == 201
    assert GIVEN_SECRET not in text and '"secret"' not in text
    assert (await response.json())["secret_preview"] == "…" + GIVEN_SECRET[-4:]


async def test_secret_is_stored_encrypted(client, tenant, pool, settings):
    """The database holds a ciphertext that decrypts to the secret, never the plaintext."""
    created = await create(client, tenant, secret=GIVEN_SECRET)
    stored = await pool.fetchval(
        "SELECT secret_ciphertext FROM webhooks WHERE id = $1", uuid.UUID(created["id"])
    )
    assert GIVEN_SECRET.encode() not in bytes(stored)
    assert SecretBox.from_setting(settings.secret_key).decrypt(stored) == GIVEN_SECRET


async def test_create_accepts_every_field(client, tenant):
    """name, state, api_version, ordering and max_in_flight are stored as given."""
    created = await create(
        client,
        tenant,
        topics=[TOPIC, OTHER_TOPIC],
        secret=GIVEN_SECRET,
        name="Billing receiver",
        state="DISABLED",
        api_version="v1.0",
        ordering="unordered",
        max_in_flight=4,
    )
    fetched = await (await client.get(f"/webhooks/{created['id']}", headers=tenant.headers)).json()
    assert fetched == created
    assert fetched["topics"] == [TOPIC, OTHER_TOPIC]
    assert (fetched["name"], fetched["state"], fetched["ordering"], fetched["max_in_flight"]) == (
        "Billing receiver",
        "DISABLED",
        "unordered",
        4,
    )


async def test_unordered_defaults_to_the_per_webhook_in_flight_cap(client, tenant, settings):
    """An unordered webhook without max_in_flight gets HOOKLANE_MAX_IN_FLIGHT_PER_WEBHOOK."""
    created = await create(client, tenant, ordering="unordered")
    assert created["max_in_flight"] == settings.max_in_flight_per_webhook


def _problem_paths(payload: dict[str, Any]) -> set[str]:
    return {detail["path"] for detail in payload["error"]["details"]}


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"url": "ftp://example.com/hook"}, "/url"),
        ({"url": "not a url"}, "/url"),
        ({"url": ""}, "/url"),
        ({"url": 42}, "/url"),
        ({"topics": []}, "/topics"),
        ({"topics": [TOPIC, TOPIC]}, "/topics"),
        ({"topics": ["NO.SUCH.TOPIC"]}, "/topics/0"),
        ({"topics": [TOPIC, "lower.case"]}, "/topics/1"),
        ({"topics": TOPIC}, "/topics"),
        ({"secret": "too-short"}, "/secret"),
        ({"secret": "x" * 129}, "/secret"),
        ({"name": "n" * 201}, "/name"),
        ({"state": "SLEEPING"}, "/state"),
        ({"api_version": "v2.0"}, "/api_version"),
        ({"ordering": "random"}, "/ordering"),
        ({"max_in_flight": 4}, "/max_in_flight"),
        ({"ordering": "unordered", "max_in_flight": 0}, "/max_in_flight"),
        ({"ordering": "unordered", "max_in_flight": 10_000}, "/max_in_flight"),
        ({"ordering": "unordered", "max_in_flight": "4"}, "/max_in_flight"),
        ({"colour": "blue"}, "/colour"),
    ],
)
async def test_create_rejects_invalid_fields_with_422(client, tenant, fields, path):
    """Each invalid field is a 422 validation_failed whose details point at that field."""
    response = await client.post(
        "/webhooks", json=webhook_body(URL, **fields), headers=tenant.headers
    )
    assert response.status == 422
    payload = await response.json()
    assert_matches("Error", payload)
    assert payload["error"]["code"] == "validation_failed"
    assert path in _problem_paths(payload)


@pytest.mark.parametrize("missing", ["url", "topics"])
async def test_create_requires_url_and_topics(client, tenant, missing):
    """url and topics are required."""
    body = webhook_body(URL)
    del body[missing]
    response = await client.post("/webhooks", json=body, headers=tenant.headers)
    assert response.status == 422
    assert missing in (await response.json())["error"]["message"]


async def test_unknown_fields_are_all_listed(client, tenant):
    """Every unknown field is named in the 422 details."""
    response = await client.post(
        "/webhooks", json=webhook_body(URL, colour="blue", size=3), headers=tenant.headers
    )
    details = (await response.json())["error"]["details"]
    assert response.status == 422
    assert {d["path"] for d in details if d["keyword"] == "additionalProperties"} == {
        "/colour",
        "/size",
    }


async def test_url_and_catalog_problems_are_reported_together(client, tenant, settings):
    """A refused URL and unknown topics come back in one 422 with a detail for each."""
    strict = settings.replace(allow_private_targets=False)
    body = {"url": "https://10.0.0.1/hook", "topics": [TOPIC, "NO.SUCH", "ALSO.NOT"]}
    async with api_client(strict) as strict_client:
        response = await strict_client.post("/webhooks", json=body, headers=tenant.headers)
        assert response.status == 422
        assert _problem_paths(await response.json()) == {"/url", "/topics/1", "/topics/2"}


async def test_http_url_needs_private_targets_allowed(client, tenant, settings):
    """With private targets off, http:// and loopback URLs are refused at registration."""
    strict = settings.replace(allow_private_targets=False)
    async with api_client(strict) as strict_client:
        for url in ["http://127.0.0.1:9/hook", "https://127.0.0.1/hook", "https://10.1.2.3/x"]:
            response = await strict_client.post(
                "/webhooks", json=webhook_body(url), headers=tenant.headers
            )
            assert response.status == 422, url
            assert _problem_paths(await response.json()) == {"/url"}


async def test_get_unknown_or_malformed_id_is_404(client, tenant):
    """A missing uuid and a string that is no uuid both answer 404 not_found."""
    for webhook_id in [str(uuid.uuid4()), "not-a-uuid"]:
        response = await client.get(f"/webhooks/{webhook_id}", headers=tenant.headers)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_other_tenants_webhook_is_404_everywhere(client, tenant, other_tenant, pool):
    """Another tenant's webhook id is 404 on read, update, delete and test; nothing changes."""
    created = await create(client, tenant, name="mine")
    path = f"/webhooks/{created['id']}"
    attempts = [
        client.get(path, headers=other_tenant.headers),
        client.post(path, json={"name": "theirs"}, headers=other_tenant.headers),
        client.delete(path, headers=other_tenant.headers),
        client.post(f"/webhooks/test/trigger/{created['id']}", headers=other_tenant.headers),
    ]
    for request in attempts:
        response = await request
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    listed = await (await client.get("/webhooks", headers=other_tenant.headers)).json()
    assert listed["data"] == []
    still = await (await client.get(path, headers=tenant.headers)).json()
    assert still["name"] == "mine"
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM attempts WHERE webhook_id = $1", uuid.UUID(created["id"])
        )
        == 0
    )


async def test_update_is_partial_and_bumps_updated_at(client, tenant):
    """POST /webhooks/{id} changes only the given fields and moves updated_at forward."""
    created = await create(client, tenant, name="before", secret=GIVEN_SECRET)
    response = await client.post(
        f"/webhooks/{created['id']}",
        json={"name": "after", "topics": [OTHER_TOPIC], "url": "http://127.0.0.1:10/new"},
        headers=tenant.headers,
    )
    assert response.status == 200
    updated = await response.json()
    assert_matches("Webhook", updated)
    assert (updated["name"], updated["topics"], updated["url"]) == (
        "after",
        [OTHER_TOPIC],
        "http://127.0.0.1:10/new",
    )
    unchanged = {"id", "state", "api_version", "ordering", "secret_preview", "created_at"}
    assert {key: updated[key] for key in unchanged} == {key: created[key] for key in unchanged}
    assert updated["updated_at"] > created["updated_at"]


async def test_update_can_clear_the_name(client, tenant):
    """name: null removes the name."""
    created = await create(client, tenant, name="temporary")
    response = await client.post(
        f"/webhooks/{created['id']}", json={"name": None}, headers=tenant.headers
    )
    assert (await response.json())["name"] is None


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({}, ""),
        ({"url": "gopher://x"}, "/url"),
        ({"topics": []}, "/topics"),
        ({"topics": ["NO.SUCH.TOPIC"]}, "/topics/0"),
        ({"secret": "short"}, "/secret"),
        ({"name": "n" * 201}, "/name"),
        ({"state": "ON"}, "/state"),
        ({"api_version": "v9"}, "/api_version"),
        ({"max_in_flight": 3}, "/max_in_flight"),
        ({"id": str(uuid.uuid4())}, "/id"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "/created_at"),
    ],
)
async def test_update_applies_the_creation_rules(client, tenant, fields, path):
    """Updates follow the creation rules (id/created_at are unknown fields); nothing changes."""
    created = await create(client, tenant)
    response = await client.post(f"/webhooks/{created['id']}", json=fields, headers=tenant.headers)
    assert response.status == 422
    assert path in _problem_paths(await response.json())
    after = await (await client.get(f"/webhooks/{created['id']}", headers=tenant.headers)).json()
    assert after["updated_at"] == created["updated_at"]


async def test_update_ordering_switches_the_in_flight_cap(client, tenant, settings):
    """unordered takes max_in_flight (default: the per-webhook cap); ordered resets it to 1."""
    created = await create(client, tenant)
    path = f"/webhooks/{created['id']}"
    default = await (
        await client.post(path, json={"ordering": "unordered"}, headers=tenant.headers)
    ).json()
    assert default["max_in_flight"] == settings.max_in_flight_per_webhook
    given = await (
        await client.post(path, json={"max_in_flight": 3}, headers=tenant.headers)
    ).json()
    assert (given["ordering"], given["max_in_flight"]) == ("unordered", 3)
    back = await (
        await client.post(path, json={"ordering": "ordered"}, headers=tenant.headers)
    ).json()
    assert (back["ordering"], back["max_in_flight"]) == ("ordered", 1)


async def test_update_secret_rotates_and_keeps_the_previous_for_a_day(
    client, tenant, pool, settings
):
    """A new secret becomes current; the old one stays valid about 24 h; neither is returned."""
    created = await create(client, tenant, secret=GIVEN_SECRET)
    new_secret = "the-new-secret-9876543210"
    response = await client.post(
        f"/webhooks/{created['id']}", json={"secret": new_secret}, headers=tenant.headers
    )
    text = await response.text()
    assert response.status == 200
    assert new_secret not in text and GIVEN_SECRET not in text
    assert (await response.json())["secret_preview"] == "…" + new_secret[-4:]
    row = await pool.fetchrow(
        "SELECT secret_ciphertext, previous_secret_ciphertext,"
        " extract(epoch FROM previous_secret_expires_at - now()) AS grace"
        " FROM webhooks WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    box = SecretBox.from_setting(settings.secret_key)
    assert box.decrypt(row["secret_ciphertext"]) == new_secret
    assert box.decrypt(row["previous_secret_ciphertext"]) == GIVEN_SECRET
    assert 23 * 3600 < row["grace"] <= 24 * 3600


async def test_enabling_clears_the_disabled_reason(client, tenant, pool):
    """Re-enabling a disabled webhook clears disabled_reason and its failure streak."""
    created = await create(client, tenant)
    await pool.execute(
        "UPDATE webhooks SET state = 'DISABLED', disabled_reason = 'endpoint gone (410)',"
        " consecutive_failures = 7, failing_since = now() WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    disabled = await (await client.get(f"/webhooks/{created['id']}", headers=tenant.headers)).json()
    assert (disabled["state"], disabled["disabled_reason"]) == ("DISABLED", "endpoint gone (410)")
    response = await client.post(
        f"/webhooks/{created['id']}", json={"state": "ENABLED"}, headers=tenant.headers
    )
    enabled = await response.json()
    assert (enabled["state"], enabled["disabled_reason"], enabled["consecutive_failures"]) == (
        "ENABLED",
        None,
        0,
    )


async def test_delete_removes_the_webhook(client, tenant):
    """DELETE answers 204 with no body; the webhook is gone and a second delete is 404."""
    created = await create(client, tenant)
    path = f"/webhooks/{created['id']}"
    response = await client.delete(path, headers=tenant.headers)
    assert response.status == 204
    assert await response.read() == b""
    assert (await client.get(path, headers=tenant.headers)).status == 404
    assert (await client.delete(path, headers=tenant.headers)).status == 404


async def test_list_pages_newest_first_with_a_cursor(client, tenant):
    """limit and next_cursor walk every webhook exactly once, newest first, then null."""
    ids = [(await create(client, tenant, name=f"w{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/webhooks", params=params, headers=tenant.headers)
        page = await response.json()
        assert response.status == 200
        assert_matches("WebhookList", page)
        assert len(page["data"]) <= 2
        seen += [webhook["id"] for webhook in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_list_filters_by_topic_and_state(client, tenant):
    """topic and state narrow the list (alone and together)."""
    a = await create(client, tenant, topics=[TOPIC])
    b = await create(client, tenant, topics=[TOPIC, OTHER_TOPIC], state="DISABLED")
    c = await create(client, tenant, topics=[OTHER_TOPIC])

    async def ids(**params: str) -> list[str]:
        response = await client.get("/webhooks", params=params, headers=tenant.headers)
        assert response.status == 200
        return [w["id"] for w in (await response.json())["data"]]

    assert await ids(topic=OTHER_TOPIC) == [c["id"], b["id"]]
    assert await ids(state="DISABLED") == [b["id"]]
    assert await ids(state="ENABLED") == [c["id"], a["id"]]
    assert await ids(topic=TOPIC, state="ENABLED") == [a["id"]]
    assert await ids(topic="INCORPORATION_REQUEST.COMPLETED") == []


async def test_list_shows_the_backlog_size(client, tenant, pool):
    """backlog counts the webhook's parked deliveries."""
    created = await create(client, tenant)
    for n in range(3):
        await pool.execute(
            "INSERT INTO backlog (webhook_id, event_id, task) VALUES ($1, $2, '{}')",
            uuid.UUID(created["id"]),
            f"evt_{n}",
        )
    listed = await (await client.get("/webhooks", headers=tenant.headers)).json()
    assert [w["backlog"] for w in listed["data"]] == [3]
    one = await (await client.get(f"/webhooks/{created['id']}", headers=tenant.headers)).json()
    assert one["backlog"] == 3


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 422),
        ({"limit": "101"}, 422),
        ({"limit": "ten"}, 422),
        ({"state": "SLEEPING"}, 422),
        ({"topic": "not a topic"}, 422),
        ({"cursor": "garbage!!"}, 400),
        ({"cursor": "WyJub3QtYS1kYXRlIiwieCJd"}, 400),
    ],
)
async def test_list_rejects_bad_parameters(client, tenant, params, status):
    """Out-of-range limits, unknown states, bad topics and foreign cursors are 4xx, never 500."""
    response = await client.get("/webhooks", params=params, headers=tenant.headers)
    assert response.status == status
    assert_matches("Error", await response.json())


async def test_list_accepts_the_maximum_limit(client, tenant):
    """limit=100 is allowed."""
    await create(client, tenant)
    response = await client.get("/webhooks", params={"limit": "100"}, headers=tenant.headers)
    assert response.status == 200
    assert len((await response.json())["data"]) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://example.com/hook"}, "url: the URL must start with https://"),
        ({"max_in_flight": 2}, "max_in_flight: an ordered webhook has exactly one request"),
    ],
)
async def test_schema_rules_explain_themselves(client, tenant, fields, message):
    """Rules whose generic message would be cryptic (a regex, a const) say what to do."""
    response = await client.post(
        "/webhooks", json=webhook_body(URL, **fields), headers=tenant.headers
    )
    assert response.status == 422
    assert (await response.json())["error"]["message"].startswith(message)


async def test_secrets_are_never_logged(client, tenant):
    """Create, update and test log the webhook's id and field names, never a secret."""
    new_secret = "rotated-secret-0123456789"
    with capture_logs() as logs:
        created = await create(client, tenant, secret=GIVEN_SECRET)
        generated = await create(client, tenant)
        await client.post(
            f"/webhooks/{created['id']}", json={"secret": new_secret}, headers=tenant.headers
        )
        await client.post(f"/webhooks/test/trigger/{created['id']}", headers=tenant.headers)
    events = {entry["event"] for entry in logs}
    assert {"webhook.created", "webhook.updated", "webhook.tested"} <= events
    updated = next(entry for entry in logs if entry["event"] == "webhook.updated")
    assert updated["fields"] == ["secret"]
    text = repr(logs)
    for secret in (GIVEN_SECRET, new_secret, generated["secret"]):
        assert secret not in text
