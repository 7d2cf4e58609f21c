"""The one rule for JSON Hooklane accepts (``dispatcher.messages.json_limits``): depth and NUL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dispatcher.messages.json_limits import MAX_DATA_DEPTH, json_problem
from dispatcher.messages.wire import DeliveryTask, Event, InvalidMessage


def nested(depth: int, leaf: Any = 0) -> Any:
    """A list nested ``depth`` levels deep around ``leaf`` (depth 1: ``[leaf]``)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ({"a": 1}, 1, None),
        ({"a": {"b": 1}}, 1, ("/a", "too_deep")),
        ({"a": {"b": 1}}, 2, None),
        (nested(5), 5, None),
        (nested(6), 5, ("/0/0/0/0/0", "too_deep")),
        ({"a": "x\x00y"}, 8, ("/a", "nul_character")),
        ({"a\x00": 1}, 8, ("/a\x00", "nul_character")),
        ({"k/~": ["ok", "\x00"]}, 8, ("/k~1~0/1", "nul_character")),
        ("\x00", 8, ("", "nul_character")),
        ({"n": 10**40, "f": 1.5, "b": True, "z": None}, 1, None),
        ([[], {}, ""], 2, None),
    ],
)
def test_json_problem_finds_the_first_breach(value, limit, expected):
    """Depth beyond the limit and NUL in a string or key are found, with a JSON pointer."""
    problem = json_problem(value, limit)
    assert (None if problem is None else (problem.pointer, problem.category)) == expected


@pytest.mark.parametrize(
    "value",
    [nested(MAX_DATA_DEPTH + 1), {"a": "\x00"}, {"a": [{"b\x00": 1}]}],
)
def test_the_raw_fast_path_never_hides_a_breach(value):
    """Given the bytes, the answer is the same as without them."""
    raw = orjson.dumps(value)
    assert json_problem(value, MAX_DATA_DEPTH, raw) == json_problem(value, MAX_DATA_DEPTH)
    assert json_problem(value, MAX_DATA_DEPTH, raw) is not None


def deep_json(depth: int) -> bytes:
    """A JSON list nested ``depth`` levels deep, as text (orjson writes at most 254)."""
    return b"[" * depth + b"0" + b"]" * depth


def message(*, deep: int = 0, **fields: Any) -> bytes:
    """An event message; ``deep``: its data is ``{"a": <list nested deep levels>}``."""
    value = {"id": "e1", "topic": "T", "tenant_id": "t", "triggered_at": 1, "data": {}}
    value.update(fields)
    raw = orjson.dumps(value)
    if deep:
        raw = raw.replace(b'"data":{}', b'"data":{"a":' + deep_json(deep) + b"}")
    return raw


@pytest.mark.parametrize(
    ("raw", "category", "fragment"),
    [
        (message(deep=300), "too_deep", "nested deeper than 64"),
        (message(deep=MAX_DATA_DEPTH), "too_deep", "/data/a"),
        (message(data={"name": "a\x00b"}), "nul_character", "/data/name"),
        (message(data={"a\x00": 1}), "nul_character", "key"),
        (message(id="e\x00"), "nul_character", "id"),
        (message(tenant_id="t\x00"), "nul_character", "tenant_id"),
        (message(topic="T\x00"), "nul_character", "topic"),
    ],
)
def test_events_breaking_the_rule_are_invalid(raw, category, fragment):
    """A Kafka event (and a delivery task carrying it) that breaks the rule is refused."""
    with pytest.raises(InvalidMessage) as caught:
        Event.from_message(raw)
    assert caught.value.category == category
    assert fragment in caught.value.reason
    task = b'{"webhook_id":"w","event":' + raw + b"}"
    with pytest.raises(InvalidMessage) as caught:
        DeliveryTask.from_message(task)
    assert caught.value.category == category


def test_data_at_the_limit_is_accepted_and_encodes_again():
    """Data nested exactly MAX_DATA_DEPTH levels is an event, and its task encodes."""
    event = Event.from_message(message(deep=MAX_DATA_DEPTH - 1))
    task = DeliveryTask("w", event)
    assert DeliveryTask.from_message(task.to_message()) == task
