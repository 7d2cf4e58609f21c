"""The embedded broker's tuning: fewer mirror partitions and a shorter fetch wait, unless set."""

from __future__ import annotations

import pytest

from dispatcher.bench.runner import broker_info
from dispatcher.kafka.broker import EMBEDDED_DEFAULTS, embedded_settings
from dispatcher.runtime.supervisor import child_env
from dispatcher.settings import Settings


@pytest.mark.parametrize(
    ("environ", "partitions", "wait_ms"),
    [
        ({}, 1, 5),
        ({"HOOKLANE_TOPIC_PARTITIONS": "8"}, 8, 5),
        ({"HOOKLANE_FETCH_MAX_WAIT_MS": "10"}, 1, 10),
        ({"HOOKLANE_TOPIC_PARTITIONS": "3", "HOOKLANE_FETCH_MAX_WAIT_MS": "20"}, 3, 20),
    ],
    ids=["defaults", "partitions-set", "wait-set", "both-set"],
)
def test_embedded_defaults_apply_only_where_the_environment_is_silent(
    environ: dict[str, str], partitions: int, wait_ms: int
) -> None:
    """What the operator set wins; the rest takes the embedded broker's tuning."""
    settings = Settings.from_env(environ)
    tuned = embedded_settings(settings, environ)
    assert (tuned.topic_partitions, tuned.fetch_max_wait_ms) == (partitions, wait_ms)
    assert tuned.deliveries_partitions == 4
    # Everything else is untouched.
    assert tuned.database_url == settings.database_url
    assert tuned.max_in_flight == settings.max_in_flight


def test_the_settings_defaults_stay_those_for_apache_kafka() -> None:
    """Without the embedded broker nothing changes: the defaults differ from its tuning."""
    settings = Settings()
    assert settings.topic_partitions != EMBEDDED_DEFAULTS["topic_partitions"]
    assert settings.fetch_max_wait_ms != EMBEDDED_DEFAULTS["fetch_max_wait_ms"]
    assert settings.deliveries_partitions != EMBEDDED_DEFAULTS["deliveries_partitions"]


def test_children_get_the_tuning_of_the_stack() -> None:
    """``hooklane up`` (and the bench) pass the resolved values to every child process."""
    tuned = embedded_settings(Settings(), {})
    env = child_env(tuned)
    assert env["HOOKLANE_TOPIC_PARTITIONS"] == "1"
    assert env["HOOKLANE_FETCH_MAX_WAIT_MS"] == "5"
    assert env["HOOKLANE_DELIVERIES_PARTITIONS"] == "4"
    assert Settings.from_env(env).fetch_max_wait_ms == 5


def test_the_bench_records_the_broker_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The results file says which partitioning and fetch wait the figures come from."""
    monkeypatch.delenv("HOOKLANE_TOPIC_PARTITIONS", raising=False)
    monkeypatch.delenv("HOOKLANE_DELIVERIES_PARTITIONS", raising=False)
    monkeypatch.setenv("HOOKLANE_FETCH_MAX_WAIT_MS", "7")
    info = broker_info(Settings(fetch_max_wait_ms=7))
    assert info["topic_partitions"] == 1
    assert info["fetch_max_wait_ms"] == 7
    assert info["deliveries_partitions"] == 4
