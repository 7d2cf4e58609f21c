"""`hooklane up`'s supervisor: restart backoff, the children's environment, the dev key."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from dispatcher.delivery.secrets import SecretBox, dev_key
from dispatcher.kafka.broker import BrokerError
from dispatcher.kafka.kafka_release import KafkaToolMissing
from dispatcher.runtime.supervisor import (
    HEALTHY_AFTER_S,
    child_env,
    embedded_kind,
    restart_pause,
)
from dispatcher.settings import Settings


@pytest.mark.parametrize(
    ("restarts", "ran_for", "expected"),
    [
        (0, 0.1, (1, 1.0)),  # first quick death: 1 s
        (1, 0.1, (2, 2.0)),
        (2, 5.0, (3, 4.0)),
        (4, 1.0, (5, 16.0)),
        (5, 1.0, (6, 30.0)),  # capped
        (20, 1.0, (21, 30.0)),
        (20, HEALTHY_AFTER_S, (1, 1.0)),  # ran healthily: the backoff starts over
        (6, 3600.0, (1, 1.0)),
        (0, HEALTHY_AFTER_S - 0.1, (1, 1.0)),
        (3, HEALTHY_AFTER_S - 0.1, (4, 8.0)),  # not quite long enough: keeps growing
    ],
)
def test_restart_pause(restarts: int, ran_for: float, expected: tuple[int, float]) -> None:
    """The pause doubles per quick death up to 30 s and resets after a healthy run."""
    assert restart_pause(restarts, ran_for) == expected


def test_child_env_passes_the_key_and_replication_explicitly() -> None:
    """Children get the secret key and the replication factor in their environment."""
    key = Fernet.generate_key().decode()
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1", secret_key=key, kafka_replication_factor=1
    )
    env = child_env(settings)
    assert env["HOOKLANE_SECRET_KEY"] == key
    assert env["HOOKLANE_KAFKA_REPLICATION_FACTOR"] == "1"
    assert Settings.from_env(env).secret_key == key


def test_dev_key_is_created_once_and_private(tmp_path: Path) -> None:
    """The development key file is made 0600 on first use and read back afterwards."""
    path = tmp_path / ".hooklane" / "secret.key"
    first = dev_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dev_key(path) == first
    SecretBox.from_setting(first)  # a usable key


def _kafka_runs() -> None:
    """A probe that finds Java and Maven and resolves the pinned release."""


def _no_java() -> None:
    raise KafkaToolMissing("java not found: install Java 17+")


def _offline() -> None:
    raise BrokerError("mvn could not resolve org.apache.kafka:kafka_2.13:4.4.0")


@pytest.mark.parametrize(
    ("wanted", "explicit", "probe", "expected"),
    [
        ("kafka", False, _kafka_runs, ("kafka", "")),
        ("kafka", False, _no_java, ("tansu", "java not found: install Java 17+")),
        (
            "kafka",
            False,
            _offline,
            ("tansu", "mvn could not resolve org.apache.kafka:kafka_2.13:4.4.0"),
        ),
        ("tansu", True, _kafka_runs, ("tansu", "")),
        # asked for by name: starting it says what is missing
        ("kafka", True, _no_java, ("kafka", "")),
    ],
)
def test_embedded_kind(
    wanted: str, explicit: bool, probe: Callable[[], None], expected: tuple[str, str]
) -> None:
    assert embedded_kind(wanted, explicit, probe) == expected
