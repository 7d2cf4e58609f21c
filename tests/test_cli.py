"""The `hooklane` subcommands operators use, run as real processes."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from unittest.mock import ANY

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from cryptography.fernet import Fernet

from dispatcher.messages.wire import Event
from dispatcher.settings import Settings
from dispatcher.store.api_key_store import Caller, caller_for_api_key
from tests.conftest import TenantKey
from tests.support.pipeline import settings_env, wait_until


async def hooklane(settings: Settings, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run `hooklane ARGS` with ``settings`` in its environment."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.cli",
        *args,
        env=settings_env(settings),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_tenants_create_prints_a_working_key_once(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """`tenants create` prints the tenant and a key that authenticates as it."""
    code, out, _ = await hooklane(settings, "tenants", "create", "Acme")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    tenant_id, api_key = fields["tenant"].strip(), fields["api key"].strip()
    assert await caller_for_api_key(pool, api_key) == Caller(tenant_id, ANY)
    stored = await pool.fetchval("SELECT key_hash FROM api_keys WHERE tenant_id = $1", tenant_id)
    assert api_key.encode() not in bytes(stored)


async def test_topics_add_extends_the_catalog_and_creates_the_mirror_topic(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """`topics add` stores name, description and schema, and creates the Kafka topic."""
    name = f"CLI.ADDED_{uuid.uuid4().hex[:6].upper()}"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    schema_file = tmp_path / "schema.json"
    schema_file.write_bytes(orjson.dumps(schema))
    code, out, err = await hooklane(
        settings, "topics", "add", name, "--schema", str(schema_file), "--description", "added"
    )
    assert code == 0, err
    assert name in out
    row = await pool.fetchrow("SELECT description, schema FROM topics WHERE name = $1", name)
    assert row is not None
    assert (row["description"], row["schema"]) == ("added", schema)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        assert settings.mirror_topic(name) in await consumer.topics()
    finally:
        await consumer.stop()


async def test_topics_add_rejects_a_bad_schema_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    """A schema file that is not JSON is refused with one line and exit 1."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text("{not json")
    code, _, err = await hooklane(
        settings, "topics", "add", "CLI.BAD", "--schema", str(schema_file)
    )
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "not valid JSON" in err


async def test_publish_writes_the_event_message_to_the_mirror_topic(
    internal_topics: Settings, tenant: TenantKey
) -> None:
    """`publish` sends the documented event message, keyed by the tenant, and prints its id."""
    settings = internal_topics
    topic = "REGISTRATIONS.NEW.SUCCEEDED"
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    code, out, err = await hooklane(
        settings,
        "publish",
        topic,
        "--tenant",
        tenant.id,
        "--data",
        '{"registration_id": "r1"}',
        "--traceparent",
        parent,
    )
    assert code == 0, err
    event_id = out.strip()
    consumer = AIOKafkaConsumer(
        settings.mirror_topic(topic),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    seen = []
    try:

        async def arrived() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(records)
            return bool(seen)

        await wait_until(arrived, 30, message="the published event")
    finally:
        await consumer.stop()
    event = Event.from_message(seen[0].value, expected_topic=topic)
    assert (event.id, event.tenant_id, event.data) == (
        event_id,
        tenant.id,
        {"registration_id": "r1"},
    )
    assert seen[0].key == tenant.id.encode()
    # The trace rides in the record's headers, as an instrumented producer writes it.
    assert dict(seen[0].headers)["traceparent"] == parent.encode()


async def test_publish_rejects_data_that_is_not_an_object(settings: Settings) -> None:
    """`publish --data` must be a JSON object: one line, exit 1, nothing sent."""
    code, _, err = await hooklane(settings, "publish", "A.B", "--tenant", "t", "--data", "[1]")
    assert code == 1
    assert "JSON object" in err


async def test_publish_rejects_a_traceparent_that_is_not_one(settings: Settings) -> None:
    """`publish --traceparent` must be a W3C traceparent: one line, exit 1, nothing sent."""
    code, _, err = await hooklane(
        settings, "publish", "A.B", "--tenant", "t", "--traceparent", "00-nope"
    )
    assert code == 1
    assert "W3C traceparent" in err


async def test_migrate_and_secret_key(settings: Settings) -> None:
    """`migrate` on an up-to-date database applies nothing; `secret-key` prints a Fernet key."""
    code, out, err = await hooklane(settings, "migrate")
    assert (code, out.splitlines()[0]) == (0, "applied: nothing (up to date)"), err
    code, out, _ = await hooklane(settings, "secret-key")
    assert code == 0
    Fernet(out.strip().encode())  # raises if it is not a valid key


async def test_migrate_creates_the_internal_topics_with_the_replication_setting(
    settings: Settings,
) -> None:
    """`migrate` creates deliveries and dead-letter topics; a second run finds them."""
    code, out, err = await hooklane(settings, "migrate")
    assert code == 0, err
    assert (
        f"topic {settings.deliveries_topic}: created, {settings.deliveries_partitions}"
        " partition(s), 1 replica(s) (wanted: 1)" in out
    )
    assert f"topic {settings.dead_letter_topic}: created, 1 partition(s)" in out
    code, out, err = await hooklane(settings, "topics", "ensure")
    assert code == 0, err
    assert f"topic {settings.deliveries_topic}: exists" in out
    assert "warning" not in out


async def test_topics_ensure_warns_about_fewer_partitions_than_configured(
    settings: Settings,
) -> None:
    """Existing topics with fewer partitions or replicas than configured are reported."""
    code, _, err = await hooklane(settings, "topics", "ensure")
    assert code == 0, err
    code, out, err = await hooklane(
        settings.replace(deliveries_partitions=8, kafka_replication_factor=3), "topics", "ensure"
    )
    assert code == 0, err
    assert f"warning: {settings.deliveries_topic}: 4 partition(s), fewer than" in out
    assert f"warning: {settings.dead_letter_topic}: 1 replica(s), fewer than 3" in out


@pytest.mark.parametrize("command", ["router", "deliverer"])
async def test_services_refuse_to_start_without_the_internal_topics(
    settings: Settings, command: str
) -> None:
    """router/deliverer do not create topics: one line naming `hooklane migrate`, exit 1."""
    code, _, err = await hooklane(settings, command)
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "hooklane migrate" in err and settings.deliveries_topic in err


@pytest.mark.parametrize("command", ["api", "router", "deliverer", "rotate-secrets"])
async def test_commands_refuse_to_start_without_a_secret_key(
    settings: Settings, tmp_path: Path, command: str
) -> None:
    """Without HOOKLANE_SECRET_KEY: exit 2, one line saying `hooklane secret-key`, no key file."""
    code, _, err = await hooklane(settings.replace(secret_key=None), command, cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines() == [
        f"hooklane {command}: HOOKLANE_SECRET_KEY is not set: make one with"
        " `hooklane secret-key` and give the same key to every Hooklane process"
        " (`hooklane up` creates a development key)"
    ]
    assert not (tmp_path / ".hooklane").exists()
