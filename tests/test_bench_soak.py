"""The soak bench's pure parts: reading ``hooklane up``'s banner, naming processes."""

from __future__ import annotations

import pytest

from dispatcher.bench.soak import banner_value, role_of

BANNER = """
Hooklane is up.
  API:          http://127.0.0.1:8080
  Dev tenant:   ten_dev
  Dev API key:  hl_dev_abc123
  Kafka:        127.0.0.1:41234
  Postgres:     postgresql://postgres@127.0.0.1:5432/hooklane
Press Ctrl-C to stop.
"""


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("Dev API key", "hl_dev_abc123"),
        ("Kafka", "127.0.0.1:41234"),
        ("API", "http://127.0.0.1:8080"),
        ("Dev tenant", "ten_dev"),
    ],
)
def test_banner_value(label: str, value: str) -> None:
    assert banner_value(BANNER, label) == value


def test_banner_without_the_label_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="Metrics"):
        banner_value(BANNER, "Metrics")


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["java", "-Xmx512m", "kafka.Kafka", "server.properties"], "java"),
        (["/venv/bin/tansu", "broker"], "tansu"),
        (["python", "-m", "dispatcher.cli", "router"], "router"),
        (["python", "-m", "dispatcher.cli", "deliverer"], "deliverer"),
        (["python", "-m", "api"], "api"),
        (["postgres: checkpointer"], "postgres"),
        (["python", "-m", "dispatcher.cli", "up"], "supervisor"),
    ],
)
def test_role_of(cmdline: list[str], expected: str) -> None:
    assert role_of(cmdline) == expected
