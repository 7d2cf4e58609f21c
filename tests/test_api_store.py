"""The webhook and topic stores directly: load_target, rotation expiry, catalog rules."""

from __future__ import annotations

import uuid

import pytest

from dispatcher.delivery.secrets import SecretBox
from dispatcher.store import webhook_store as store
from dispatcher.store.topic_store import (
    InvalidTopic,
    Topic,
    add_topic,
    check_topic_name,
    get_topic,
    topic_names,
)
from dispatcher.store.webhook_targets import load_target
from tests.support.api import GIVEN_SECRET, TOPIC

NEW_SECRET = "another-secret-abcdefgh"


@pytest.fixture
def box(settings) -> SecretBox:
    return SecretBox.from_setting(settings.secret_key)


async def make(pool, box, tenant, **fields) -> store.Webhook:
    values = {"url": "http://127.0.0.1:9/h", "topics": [TOPIC], "secret": GIVEN_SECRET, **fields}
    return await store.create_webhook(pool, box, tenant_id=tenant.id, **values)


async def test_load_target_decrypts_for_the_deliverer(pool, box, tenant):
    """load_target returns the delivery view with the plaintext secret, for any state."""
    webhook = await make(pool, box, tenant, state="DISABLED", ordering="unordered", max_in_flight=3)
    target = await load_target(pool, box, webhook.id)
    assert target is not None
    assert (target.id, target.tenant_id, target.url, target.secrets) == (
        webhook.id,
        tenant.id,
        "http://127.0.0.1:9/h",
        (GIVEN_SECRET,),
    )
    assert (target.state, target.ordering, target.max_in_flight, target.api_version) == (
        "DISABLED",
        "unordered",
        3,
        "v1.0",
    )


# A fixed unknown id (not uuid4()): parametrized ids must match in every xdist worker.
@pytest.mark.parametrize("webhook_id", ["3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "nope", ""])
async def test_load_target_of_unknown_ids_is_none(pool, box, webhook_id):
    """Unknown and malformed ids load nothing."""
    assert await load_target(pool, box, webhook_id) is None


async def test_previous_secret_signs_only_until_it_expires(pool, box, tenant):
    """After rotation the target has [new, old]; once the grace period is over only [new]."""
    webhook = await make(pool, box, tenant)
    await store.update_webhook(pool, box, tenant.id, webhook.id, {"secret": NEW_SECRET})
    rotated = await load_target(pool, box, webhook.id)
    assert rotated is not None and rotated.secrets == (NEW_SECRET, GIVEN_SECRET)
    await pool.execute(
        "UPDATE webhooks SET previous_secret_expires_at = now() - interval '1 second'"
        " WHERE id = $1",
        uuid.UUID(webhook.id),
    )
    expired = await load_target(pool, box, webhook.id)
    assert expired is not None and expired.secrets == (NEW_SECRET,)


async def test_store_calls_are_scoped_by_tenant(pool, box, tenant, other_tenant):
    """get, update and delete with another tenant's id see nothing and change nothing."""
    webhook = await make(pool, box, tenant)
    assert await store.get_webhook(pool, other_tenant.id, webhook.id) is None
    assert await store.update_webhook(pool, box, other_tenant.id, webhook.id, {"name": "x"}) is None
    assert await store.delete_webhook(pool, other_tenant.id, webhook.id) is False
    assert await store.get_webhook(pool, tenant.id, webhook.id) == webhook


async def test_update_refuses_columns_it_does_not_own(pool, box, tenant):
    """Only the updatable columns (and secret) can be changed through update_webhook."""
    webhook = await make(pool, box, tenant)
    with pytest.raises(ValueError, match="tenant_id"):
        await store.update_webhook(pool, box, tenant.id, webhook.id, {"tenant_id": "evil"})


async def test_updates_notify_routers(pool, box, tenant):
    """A change through the store NOTIFYs hooklane_webhooks with the webhook id."""
    webhook = await make(pool, box, tenant)
    heard: list[str] = []
    listen = lambda *args: heard.append(args[3])  # noqa: E731
    async with pool.acquire() as conn:
        await conn.add_listener("hooklane_webhooks", listen)
        await store.update_webhook(pool, box, tenant.id, webhook.id, {"state": "DISABLED"})
        for _ in range(100):
            if heard:
                break
            await conn.execute("SELECT 1")
        await conn.remove_listener("hooklane_webhooks", listen)
    assert heard[:1] == [webhook.id]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("REGISTRATIONS.NEW.SUCCEEDED", True),
        ("A", True),
        ("A_B.C1", True),
        ("a.b", False),
        ("A..B", False),
        (".A", False),
        ("A.", False),
        ("A-B", False),
        ("A B", False),
        ("", False),
        ("A" * 201, False),
    ],
)
def test_topic_names(name, ok):
    """Topic names are dot-separated words of A-Z, 0-9 and _."""
    if ok:
        check_topic_name(name)
    else:
        with pytest.raises(InvalidTopic):
            check_topic_name(name)


@pytest.mark.parametrize(
    ("schema", "example"),
    [
        ({"type": "object", "examples": [{"a": 1}, {"b": 2}]}, {"a": 1}),
        ({"type": "object", "examples": []}, {}),
        ({"type": "object", "examples": ["not an object"]}, {}),
        ({"type": "object"}, {}),
    ],
)
def test_topic_example_is_the_first_object_example(schema, example):
    """The sample data of a topic is its schema's first example object, else {}."""
    assert Topic("T", "", schema).example() == example


async def test_add_topic_upserts(pool):
    """Adding an existing topic replaces its description and schema."""
    name = f"STORE.TEST_{uuid.uuid4().hex[:8].upper()}"
    await add_topic(pool, name, "first", {"type": "object"})
    second = await add_topic(pool, name, "second", {"type": "object", "required": ["x"]})
    assert (second.description, second.schema) == ("second", {"type": "object", "required": ["x"]})
    assert await get_topic(pool, name) == second
    assert name in await topic_names(pool)


@pytest.mark.parametrize(
    ("name", "schema"),
    [
        ("lower.case", {"type": "object"}),
        ("OK.NAME", {"type": "no-such-type"}),
        ("OK.NAME", {"required": "x"}),
        ("OK.NAME", ["not", "an", "object"]),
    ],
)
async def test_add_topic_rejects_bad_names_and_schemas(pool, name, schema):
    """Invalid names and schemas that are not JSON Schemas raise InvalidTopic; nothing is stored."""
    with pytest.raises(InvalidTopic):
        await add_topic(pool, name, "", schema)
    assert await get_topic(pool, name) is None
