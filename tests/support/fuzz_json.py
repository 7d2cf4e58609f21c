"""Hypothesis strategies for hostile input (support for the fuzz tests; no tests here).

``json_text()`` writes JSON *text*, so it can say what no encoder would: nesting up to
and past the reader's limit (orjson reads 1,024 levels, writes 254), NUL and lone
surrogate escapes, numbers beyond 64 bits and doubles, duplicate and very long keys,
very long strings. ``event_text()`` is an event message with each field right, wrong
in type, hostile in content, or missing; ``task_text()`` the same for delivery tasks.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from hypothesis import strategies as st

READER_DEPTH = 1024  # orjson refuses deeper documents
DEPTHS = (2, 63, 64, 65, 66, 200, 254, 255, 300, 1000, READER_DEPTH - 1, READER_DEPTH, 1100)
LONG = 100_000  # characters in a "very long" string or key; records stay below 1 MB

HOSTILE_STRINGS = (
    '"\\u0000"',
    '"a\\u0000b"',
    '"\\ud800"',
    '"x\\udfffy"',
    '"\\ud83d\\ude00"',
    '""',
    '"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    '"\u2028\u00e9\U0001f600"',
)
NUMBERS = (
    "0",
    "-0",
    "1.5",
    "-1e-400",
    "1e308",
    "1e309",
    "-1e999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "123456789012345678901234567890123456789",
)


def _dumped(value: object) -> str:
    return orjson.dumps(value).decode()


def strings() -> st.SearchStrategy[str]:
    """A JSON string: ordinary, hostile escapes, or very long."""
    return st.one_of(
        # Lone surrogates only as escapes (below): raw, they make the whole text invalid.
        st.text(st.characters(exclude_categories=["Cs"]), max_size=12).map(_dumped),
        st.sampled_from(HOSTILE_STRINGS),
        st.integers(1_000, LONG).map(lambda n: '"' + "s" * n + '"'),
    )


def scalars() -> st.SearchStrategy[str]:
    """A JSON scalar's text: strings, extreme numbers, literals."""
    return st.one_of(
        strings(),
        st.sampled_from(NUMBERS),
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(_dumped),
        st.sampled_from(("null", "true", "false")),
    )


def _object(members: list[tuple[str, str]], repeat_first: bool) -> str:
    if repeat_first and members:
        members = [*members, members[0]]  # a duplicate key (the last one wins)
    return "{" + ",".join(f"{key}:{value}" for key, value in members) + "}"


def _nested(depth: int, inner: str, bracket: str) -> str:
    if bracket == "[":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


def json_text(max_leaves: int = 12) -> st.SearchStrategy[str]:
    """Any JSON value's text, hostile where it can be."""
    keys = st.one_of(strings(), st.integers(1_000, LONG).map(lambda n: '"' + "k" * n + '"'))

    def containers(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        arrays = st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        objects = st.builds(_object, st.lists(st.tuples(keys, inner), max_size=4), st.booleans())
        deep = st.builds(_nested, st.sampled_from(DEPTHS), inner, st.sampled_from("[{"))
        return arrays | objects | deep

    return st.recursive(scalars(), containers, max_leaves=max_leaves)


def objects_text() -> st.SearchStrategy[str]:
    """A JSON object's text (what ``data`` should be), hostile inside."""
    return json_text().map(lambda inner: '{"v":' + inner + "}")


def _field(name: str, right: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    """``"name": value``: mostly the right kind of value, else any value, or nothing.

    Mostly right, so a good share of the messages get past validation to storage,
    routing and encoding (each field right 4 times in 5: all five about a third).
    """
    value = st.one_of(*[right] * 8, json_text(max_leaves=3), st.just(None))
    return value.map(lambda text: None if text is None else f"{_dumped(name)}:{text}")


def _message(fields: list[str | None]) -> str:
    return "{" + ",".join(field for field in fields if field is not None) + "}"


def _valid_data() -> st.SearchStrategy[str]:
    """``data`` that passes every check: plain JSON, encodable, shallow, no NUL."""
    plain = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    )
    safe = plain.filter(lambda value: "\x00" not in _dumped(value))
    return st.dictionaries(st.text(max_size=8), safe, max_size=4).map(_dumped)


def event_text(topic: str, tenant_ids: list[str], unique: str) -> st.SearchStrategy[str]:
    """An event message for ``topic``: valid, one field made hostile, or any fields.

    A third each, so storage, routing and encoding see plenty of events, and every
    check sees hostile input. ``unique`` is in every valid id: the test makes it fresh.
    """
    right = {
        "id": st.one_of(
            st.just(_dumped(unique)), st.text(max_size=20).map(lambda t: _dumped(t + unique))
        ),
        "topic": st.just(_dumped(topic)),
        "tenant_id": st.sampled_from([_dumped(t) for t in tenant_ids]),
        "triggered_at": st.sampled_from(("1700000000", "0", "1.5", "9223372036854775807")),
        "data": _valid_data(),
    }
    hostile = {
        "id": strings().map(lambda s: s[:-1][:190] + unique + '"') | json_text(max_leaves=3),
        "topic": st.one_of(st.just(_dumped(topic + "X")), strings(), json_text(max_leaves=3)),
        "tenant_id": st.one_of(strings(), json_text(max_leaves=3)),
        "triggered_at": st.one_of(st.sampled_from(("-1", "1e19", "1e309")), scalars()),
        "data": st.one_of(objects_text(), json_text()),
    }

    def message(values: Mapping[str, str | None]) -> str:
        return _message([None if v is None else f"{_dumped(k)}:{v}" for k, v in values.items()])

    valid = st.fixed_dictionaries(right)
    one_wrong = st.tuples(valid, st.sampled_from(sorted(right))).flatmap(
        lambda drawn: st.one_of(hostile[drawn[1]], st.just(None)).map(
            lambda bad: {**drawn[0], drawn[1]: bad}
        )
    )
    anything = st.fixed_dictionaries(
        {name: st.one_of(right[name], hostile[name], st.just(None)) for name in right}
    )
    return st.one_of(valid, one_wrong, anything).map(message)


def task_text(event: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A delivery task message: webhook id, kind and event right, wrong or missing."""
    kinds = st.sampled_from(['"event"', '"test"', '"redelivery"', '"nope"']) | scalars()
    return st.builds(
        lambda *fields: _message(list(fields)),
        _field("webhook_id", st.uuids().map(lambda u: _dumped(str(u))) | strings()),
        _field("kind", kinds),
        _field("event", event),
    )


def record_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes | None]:
    """A Kafka record value: the text as UTF-8, arbitrary bytes, or no value at all."""
    encoded = text.map(lambda t: t.encode("utf-8", "surrogatepass"))
    return st.one_of(encoded, encoded, encoded, st.binary(max_size=200), st.just(None))
