"""`hooklane publish` is as careful as `POST /events`: a wrong topic, tenant or data is
one line naming the problem and a non-zero exit, and nothing reaches Kafka."""

from __future__ import annotations

from pathlib import Path

import orjson

from dispatcher.kafka.topic_admin import missing_topics
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.test_cli import hooklane

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"


def one_line(err: str) -> str:
    """The whole of stderr, checked to be a single line and no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def test_a_typo_in_the_topic_fails_and_creates_no_topic(
    internal_topics: Settings, tenant: TenantKey
) -> None:
    """One letter off: exit 1, the topic named with the close catalog name; no Kafka topic."""
    settings = internal_topics
    typo = "REGISTRATION.NEW.SUCCEEDED"
    code, out, err = await hooklane(
        settings, "publish", typo, "--tenant", tenant.id, "--data", '{"registration_id": "r"}'
    )
    assert (code, out) == (1, "")
    line = one_line(err)
    assert f"unknown topic {typo!r}" in line and f"did you mean {TOPIC}?" in line
    assert "hooklane topics list" in line
    assert settings.kafka_bootstrap_servers is not None
    mirror = settings.mirror_topic(typo)
    assert await missing_topics(settings, [mirror]) == [mirror]


async def test_an_unknown_tenant_is_refused(internal_topics: Settings) -> None:
    """A tenant that does not exist: exit 1, the tenant named."""
    code, out, err = await hooklane(
        internal_topics,
        "publish",
        TOPIC,
        "--tenant",
        "ten_nobody",
        "--data",
        '{"registration_id": "r"}',
    )
    assert (code, out) == (1, "")
    assert "unknown tenant 'ten_nobody'" in one_line(err)


async def test_data_that_breaks_the_topic_schema_is_refused(
    internal_topics: Settings, tenant: TenantKey
) -> None:
    """Data the topic's schema rejects: exit 1, the schema and the first problem named."""
    code, out, err = await hooklane(
        internal_topics,
        "publish",
        TOPIC,
        "--tenant",
        tenant.id,
        "--data",
        orjson.dumps({"registration_id": 5}).decode(),
    )
    assert (code, out) == (1, "")
    line = one_line(err)
    assert f"data does not match the schema of {TOPIC}" in line
    assert "registration_id" in line


async def test_operational_topics_are_not_published_by_hand(
    internal_topics: Settings, tenant: TenantKey
) -> None:
    """Hooklane's own topics are refused as over the API."""
    code, _, err = await hooklane(
        internal_topics, "publish", "HOOKLANE.WEBHOOK.PARKED", "--tenant", tenant.id
    )
    assert code == 1
    assert "published by Hooklane itself" in one_line(err)


async def test_no_broker_anywhere_is_one_line(settings: Settings, tmp_path: Path) -> None:
    """No broker address in the environment or a `.hooklane/env`: one line saying why."""
    no_broker = settings.replace(kafka_bootstrap_servers=None)
    code, _, err = await hooklane(no_broker, "publish", TOPIC, "--tenant", "t", cwd=tmp_path)
    assert code == 2
    assert "hooklane up" in one_line(err)
