"""Settings come from HOOKLANE_* variables and bad values stop start-up clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dispatcher.durations import parse_duration, parse_schedule
from dispatcher.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("10", 10.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("3d", 259200.0),
        ("1.5s", 1.5),
        (" 7 s ", 7.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Durations accept ms/s/m/h/d and bare seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1s", "5 weeks", "1e3"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is a ValueError with an example in the message."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_schedule() -> None:
    """A schedule is a comma-separated list of durations."""
    assert parse_schedule("1s, 5m,2h") == (1.0, 300.0, 7200.0)
    with pytest.raises(ValueError):
        parse_schedule(" , ")


def test_defaults_are_sane() -> None:
    """With no environment at all, settings validate and point at local services."""
    settings = Settings.from_env({})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/hooklane"
    assert settings.kafka_bootstrap_servers is None
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8080)
    assert settings.delivery_timeout_s == 10.0
    assert settings.allow_private_targets is False
    assert settings.deliveries_topic == "hooklane.deliveries"
    assert settings.mirror_topic("A.B") == "hooklane.A.B"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/hooklane",
        "postgres://app:secret@db.internal/hooklane?sslmode=require",
        # the embedded Postgres of `hooklane up`: a unix socket directory, no TCP port
        "postgresql://postgres:@/hooklane?host=/srv/hooklane/.hooklane/pgdata",
    ],
)
def test_database_urls_accepted(url: str) -> None:
    """TCP and unix-socket Postgres URLs validate unchanged."""
    assert Settings.from_env({"HOOKLANE_DATABASE_URL": url}).database_url == url


def test_from_env_parses_every_kind() -> None:
    """Numbers, durations, booleans, lists and schedules are parsed from strings."""
    settings = Settings.from_env(
        {
            "HOOKLANE_API_PORT": "9000",
            "HOOKLANE_DELIVERY_TIMEOUT_S": "2.5",
            "HOOKLANE_ALLOW_PRIVATE_TARGETS": "yes",
            "HOOKLANE_ALLOWED_TARGET_CIDRS": "10.0.0.0/8, 192.168.1.0/24",
            "HOOKLANE_RETRY_SCHEDULE": "1s,10s,1m",
            "HOOKLANE_AUTO_DISABLE_AFTER": "36h",
            "HOOKLANE_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
            "HOOKLANE_TOPIC_PREFIX": "acme.",
        }
    )
    assert settings.api_port == 9000
    assert settings.delivery_timeout_s == 2.5
    assert settings.allow_private_targets is True
    assert settings.allowed_target_cidrs == ("10.0.0.0/8", "192.168.1.0/24")
    assert settings.retry_schedule == (1.0, 10.0, 60.0)
    assert settings.auto_disable_after == 36 * 3600
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.deliveries_topic == "acme.deliveries"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL"),
        ("DATABASE_URL", "postgresql://host:port/db", "port"),
        ("DATABASE_URL", "postgresql://host:5432", "DATABASE_URL"),
        ("DELIVERY_TIMEOUT_S", "-1", "DELIVERY_TIMEOUT_S"),
        ("DELIVERY_TIMEOUT_S", "0", "must be positive"),
        ("API_PORT", "http", "whole number"),
        ("API_PORT", "70000", "TCP port"),
        ("ALLOW_PRIVATE_TARGETS", "maybe", "true or false"),
        ("RETRY_SCHEDULE", "1s,soon", "not a duration"),
        ("LOG_FORMAT", "xml", "json or console"),
        ("MAX_IN_FLIGHT", "0", "MAX_IN_FLIGHT"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    """Each bad value raises SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=message) as caught:
        Settings.from_env({f"HOOKLANE_{name}": value})
    assert f"HOOKLANE_{name}" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("DATABASE_URL", "not a url"), ("DELIVERY_TIMEOUT_S", "-3")],
)
def test_cli_rejects_bad_settings_in_one_line(name: str, value: str) -> None:
    """The CLI prints one explanatory line and exits 2, with no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "migrate"],
        env={"HOOKLANE_" + name: value, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"HOOKLANE_{name}" in lines[0]
    assert "Traceback" not in result.stderr
