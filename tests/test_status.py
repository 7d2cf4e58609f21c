"""``hooklane status``: parsing and rendering (pure), and the real command on seeded state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from dispatcher.kafka.broker import LaunchedBroker
from dispatcher.kafka.topic_admin import ensure_topics
from dispatcher.runtime.status import (
    GroupStatus,
    Member,
    Status,
    parse_groups,
    render_text,
    to_json,
)
from dispatcher.settings import Settings
from dispatcher.store.backlog import BacklogStats
from dispatcher.store.webhook_store import FailingWebhook
from tests.conftest import TenantKey, migrated_database
from tests.support.pipeline import create_webhook
from tests.test_cli import hooklane
from tests.test_lag import commit, produce


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database of this test's own: status ranks every failing webhook in it, and the
    session database holds other tests' failing webhooks."""
    with migrated_database("status") as url:
        yield url


T0 = TopicPartition("hooklane.deliveries", 0)
T1 = TopicPartition("hooklane.deliveries", 1)


def test_parse_groups_decodes_assignments_and_skips_errors() -> None:
    """Members keep their decoded partitions; empty assignments and failed groups are safe."""
    assignment = ConsumerProtocolMemberAssignment(0, [("hooklane.deliveries", [1, 0])], b"")
    description = {
        "groups": [
            {
                "error_code": 0,
                "group": "hooklane-deliverer",
                "state": "Stable",
                "members": [
                    {
                        "member_id": "m1",
                        "client_id": "c1",
                        "client_host": "/10.0.0.1",
                        "member_assignment": assignment.encode(),
                    },
                    {
                        "member_id": "m2",
                        "client_id": "",
                        "client_host": "",
                        "member_assignment": b"",
                    },
                ],
            },
            {"error_code": 16, "group": "hooklane-router", "state": "", "members": []},
            {"error_code": -1, "group": None, "state": "", "members": []},  # tansu, unknown group
        ]
    }
    assert parse_groups(description) == {
        "hooklane-deliverer": (
            "Stable",
            (Member("m1", "c1", "/10.0.0.1", (T0, T1)), Member("m2", "", "", ())),
        )
    }


def sample_status() -> Status:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return Status(
        taken_at=now,
        groups=(
            GroupStatus("hooklane-router", "Empty", (), {}),
            GroupStatus(
                "hooklane-deliverer",
                "Stable",
                (Member("member-1", "c", "/10.0.0.1", (T0, T1)),),
                {T0: 3, T1: 7},
            ),
        ),
        backlog=BacklogStats(parked_webhooks=2, deliveries=40, oldest_age_s=5400.0),
        failing=(
            FailingWebhook(
                "wh-1", "ten_1", "https://a.example/h", "ENABLED", now - timedelta(hours=3), 12
            ),
        ),
        last_minute={"success": 10, "failure": 2},
    )


def test_render_text_fits_one_screen_and_says_it_all() -> None:
    """The text view shows groups with lag and worst partition, backlog, failing, outcomes."""
    text = render_text(sample_status())
    assert text.splitlines() == [
        "Hooklane status at 2026-01-02 03:04:05 UTC",
        "",
        "Consumer groups",
        "  hooklane-router      Empty        0 member(s)  lag 0",
        "  hooklane-deliverer   Stable       1 member(s)  lag 10, worst hooklane.deliveries/1 = 7",
        "    member-1                                         /10.0.0.1       partitions 0,1",
        "",
        "Backlog       2 parked webhook(s), 40 deliveries, oldest 90m",
        "",
        "Failing longest",
        "  wh-1    3.0h     12 failures  ENABLED  https://a.example/h",
        "",
        "Last minute   failure 2  success 10",
    ]


def test_to_json_is_complete() -> None:
    """The JSON view carries per-partition lag, the summary and every section."""
    value = to_json(sample_status())
    deliverer = value["groups"][1]
    assert deliverer["lag"] == {
        "total": 10,
        "worst_partition": "hooklane.deliveries/1",
        "worst_lag": 7,
        "partitions": {"hooklane.deliveries/0": 3, "hooklane.deliveries/1": 7},
    }
    assert deliverer["members"][0]["partitions"] == [
        "hooklane.deliveries/0",
        "hooklane.deliveries/1",
    ]
    assert value["backlog"] == {
        "parked_webhooks": 2,
        "deliveries": 40,
        "oldest_age_seconds": 5400.0,
    }
    assert value["failing_webhooks"][0]["failing_since"] == "2026-01-02T00:04:05+00:00"
    assert value["last_minute"] == {"success": 10, "failure": 2}


async def seed(pool: asyncpg.Pool, settings: Settings, tenant: TenantKey) -> str:
    """A webhook failing for 30 days, parked with a 2-hour-old backlog, and recent attempts."""
    webhook = await create_webhook(pool, settings, tenant.id, "https://dead.example/h", ["A"])
    await pool.execute(
        "UPDATE webhooks SET failing_since = now() - interval '30 days',"
        " consecutive_failures = 99 WHERE id = $1::uuid",
        webhook.id,
    )
    await pool.execute(
        "INSERT INTO parked_webhooks (webhook_id, failing_since, next_attempt_at)"
        " VALUES ($1::uuid, now() - interval '30 days', now() + interval '1 hour')",
        webhook.id,
    )
    await pool.execute(
        "INSERT INTO backlog (webhook_id, event_id, task, enqueued_at)"
        " VALUES ($1::uuid, 'evt_1', '{}'::jsonb, now() - interval '2 hours')",
        webhook.id,
    )
    rows = [("success", 0, False)] * 3 + [("failure", 0, False)] * 2
    rows += [("success", 600, False), ("success", 0, True)]  # not counted: old, test
    for outcome, ago, test in rows:
        await pool.execute(
            "INSERT INTO attempts (webhook_id, tenant_id, event_id, topic, attempt,"
            " attempted_at, outcome, duration_ms, test)"
            " VALUES ($1::uuid, $2, 'evt', 'A', 1, now() - make_interval(secs => $3), $4, 1.0, $5)",
            webhook.id,
            tenant.id,
            ago,
            outcome,
            test,
        )
    return webhook.id


async def test_status_command_shows_lag_backlog_and_failing_webhooks(
    broker: LaunchedBroker, settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """`hooklane status --json` and the text view, as real processes, on seeded state."""
    before = await pool.fetchval(
        "SELECT count(*) FROM attempts WHERE attempted_at > now() - interval '1 minute'"
        " AND NOT test AND outcome = 'success'"
    )
    webhook_id = await seed(pool, settings, tenant)
    topic = settings.deliveries_topic
    await ensure_topics(settings, {topic: 2})
    await produce(broker.bootstrap_servers, topic, {0: 5, 1: 2})
    # The real deliverer group, committed behind the high-water mark on partition 0.
    await commit(broker.bootstrap_servers, "hooklane-deliverer", {TopicPartition(topic, 0): 2})

    code, out, err = await hooklane(settings, "status", "--json")
    assert code == 0, err
    value = json.loads(out)
    deliverer = next(g for g in value["groups"] if g["group"] == "hooklane-deliverer")
    assert deliverer["lag"]["partitions"] == {f"{topic}/0": 3, f"{topic}/1": 2}
    assert deliverer["lag"]["total"] == 5
    assert deliverer["lag"]["worst_partition"] == f"{topic}/0"
    assert value["backlog"]["parked_webhooks"] >= 1 and value["backlog"]["deliveries"] >= 1
    assert value["backlog"]["oldest_age_seconds"] >= 7200
    assert value["failing_webhooks"][0]["id"] == webhook_id
    assert value["failing_webhooks"][0]["consecutive_failures"] == 99
    assert value["last_minute"]["success"] == before + 3
    assert value["last_minute"]["failure"] >= 2

    code, out, err = await hooklane(settings, "status")
    assert code == 0, err
    assert f"lag 5, worst {topic}/0 = 3" in out
    assert webhook_id in out


async def test_status_command_fails_clearly_without_a_broker(settings: Settings) -> None:
    """An unreachable broker is a one-line error and exit code 1, not a traceback."""
    from dispatcher.kafka.broker import free_port

    code, out, err = await hooklane(
        settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"), "status"
    )
    assert code == 1 and not out
    # the last line: the broker and the cause (aiokafka may log its own line first)
    assert err.strip().splitlines()[-1].startswith("hooklane status: kafka broker 127.0.0.1:")
    assert "does not answer" in err
    assert "Traceback" not in err


async def test_status_watch_refreshes_until_interrupted(settings: Settings) -> None:
    """`--watch` prints the screen again and again; Ctrl-C ends it (exit code 130)."""
    import asyncio
    import signal
    import sys

    from tests.support.pipeline import settings_env, wait_until

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.cli",
        "status",
        "--watch",
        "0.2",
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    screens = 0

    async def two_screens() -> bool:
        nonlocal screens
        line = await process.stdout.readline()  # type: ignore[union-attr]
        screens += line.startswith(b"Hooklane status at")
        return screens >= 2

    try:
        await wait_until(two_screens, 60, 0, "two refreshes")
    finally:
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 130


async def test_status_watch_rejects_a_non_positive_interval(settings: Settings) -> None:
    """`--watch 0` is a one-line error, not a busy loop."""
    code, out, err = await hooklane(settings, "status", "--watch", "0")
    assert (code, out) == (1, "")
    assert err == "hooklane status: --watch takes a positive number of seconds\n"
