"""Payload filters: validation with the problem's path, and element-wise matching."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dispatcher.subscription.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    InvalidFilter,
    compile_filter,
    event_view,
    json_equal,
    validate,
)

EVENT = event_view(
    "ORDERS.CREATED",
    "acme",
    {
        "amount": 150,
        "country": "US",
        "vip": True,
        "note": None,
        "tags": ["new", "vip"],
        "customer": {"address": {"city": "Austin", "zip": "78701"}},
        "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 5}],
    },
)


@pytest.mark.parametrize(
    ("spec", "matches"),
    [
        ({}, True),
        ({"topic": "ORDERS.CREATED"}, True),
        ({"topic": "OTHER"}, False),
        ({"tenant_id": {"$in": ["acme", "globex"]}}, True),
        ({"data.amount": 150}, True),
        ({"data.amount": 150.0}, True),
        ({"data.amount": "150"}, False),  # no type coercion
        ({"data.vip": 1}, False),  # true is not 1
        ({"data.vip": True}, True),
        ({"data.amount": {"$gte": 100}}, True),
        ({"data.amount": {"$gt": 150}}, False),
        ({"data.amount": {"$lt": 200, "$gte": 150}}, True),
        ({"data.amount": {"$lte": 149}}, False),
        ({"data.country": {"$gt": "A"}}, True),
        ({"data.country": {"$gt": 1}}, False),  # strings do not compare with numbers
        ({"data.amount": {"$ne": 150}}, False),
        ({"data.missing": {"$ne": 1}}, True),  # a missing field is not equal
        ({"data.customer.address.city": "Austin"}, True),
        ({"data": {"customer": {"address": {"zip": "78701"}}}}, True),  # nested form
        ({"data.customer.address.city": "Dallas"}, False),
        ({"data.tags": "vip"}, True),  # array contains
        ({"data.tags": "old"}, False),
        ({"data.tags": ["new", "vip"]}, True),  # the whole array
        ({"data.tags": {"$in": ["vip", "x"]}}, True),
        ({"data.tags": {"$nin": ["vip"]}}, False),
        ({"data.tags": {"$nin": ["old"]}}, True),
        ({"data.tags": {"$ne": "new"}}, False),
        ({"data.lines.sku": "B"}, True),  # through an array of objects
        ({"data.lines.qty": {"$gt": 4}}, True),
        ({"data.lines.qty": {"$gt": 5}}, False),
        ({"data.note": {"$exists": True}}, True),  # null exists
        ({"data.note": None}, True),
        ({"data.missing": {"$exists": True}}, False),
        ({"data.missing": {"$exists": False}}, True),
        ({"data.lines.price": {"$exists": True}}, False),
        ({"$or": [{"data.country": "CA"}, {"data.country": "US"}]}, True),
        ({"$or": [{"data.country": "CA"}, {"data.country": "MX"}]}, False),
        ({"$and": [{"data.country": "US"}, {"data.amount": {"$gt": 1}}]}, True),
        ({"$and": [{"data.country": "US"}, {"data.amount": {"$gt": 1000}}]}, False),
        ({"$not": {"data.country": "US"}}, False),
        ({"data.amount": {"$not": {"$gt": 1000}}}, True),
        (
            {"data.amount": {"$gte": 100}, "$or": [{"data.country": "US"}, {"data.country": "CA"}]},
            True,
        ),
        ({"data.amount": {"$gte": 100}, "data.country": "CA"}, False),  # keys are ANDed
        ({"data.amount.value": 1}, False),  # a path through a scalar reaches nothing
        ({"data.customer": {"$eq": {"address": {"city": "Austin", "zip": "78701"}}}}, True),
    ],
)
def test_filter_matches(spec: dict[str, Any], matches: bool) -> None:
    """Each filter matches the sample event exactly when expected."""
    assert validate(spec) is None
    assert compile_filter(spec)(EVENT) is matches


def _deep(levels: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"data.x": 1}
    for _ in range(levels):
        spec = {"$and": [spec]}
    return spec


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ([], "", "JSON object"),
        ({"data.x": {"$regex": "a"}}, "/data.x/$regex", "unknown operator"),
        ({"$nor": []}, "/$nor", "unknown operator"),
        ({"amount": 1}, "/amount", "not a field"),
        ({"data..x": 1}, "/data..x", "not a field"),
        ({"topic.x": 1}, "/topic.x", "no fields"),
        ({"topic": {"x": 1}}, "/topic", "no fields"),
        ({"data.x": {"$gt": [1]}}, "/data.x/$gt", "number or a string"),
        ({"data.x": {"$gt": True}}, "/data.x/$gt", "number or a string"),
        ({"data.x": {"$in": 1}}, "/data.x/$in", "list"),
        ({"data.x": {"$exists": 1}}, "/data.x/$exists", "true or false"),
        ({"data.x": {"$not": 1}}, "/data.x/$not", "object of operators"),
        ({"$or": []}, "/$or", "non-empty list"),
        ({"$or": [{"data.x": 1}, 2]}, "/$or/1", "JSON object"),
        ({"$or": [{"data.x": {"$bad": 1}}]}, "/$or/0/data.x/$bad", "unknown operator"),
        ({"data": {"a/b": {"$eq": {"~": {"$x": 1}}}, "c": {"$bad": 1}}}, "/data/c/$bad", "unknown"),
        ({"data.x": {"$gt": 1, "a": 1}}, "/data.x/a", "unknown operator"),
        ({"data.s": "x" * 5000}, "", "4096 bytes"),
        ({f"data.f{i}": i for i in range(MAX_CONDITIONS + 1)}, f"/data.f{MAX_CONDITIONS}", "64"),
        (_deep(MAX_DEPTH), "/$and/0" * (MAX_DEPTH // 2 - 1) + "/$and/0", "nests at most"),
    ],
)
def test_validate_reports_the_first_problem_with_its_path(spec: Any, path: str, words: str) -> None:
    """An invalid filter is refused with the JSON pointer of its first problem."""
    problem = validate(spec)
    assert problem is not None
    assert problem.path.startswith(path) or problem.path == path
    assert words in problem.message
    with pytest.raises(InvalidFilter):
        compile_filter(spec)


def test_depth_limit_allows_filters_up_to_the_bound() -> None:
    """A filter just within the depth bound is accepted and one level more is not."""
    fitting = max(n for n in range(MAX_DEPTH + 1) if validate(_deep(n)) is None)
    assert fitting >= 2
    assert compile_filter(_deep(fitting))(event_view("T", "t", {"x": 1})) is True
    assert validate(_deep(fitting + 1)) is not None


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@given(JSON_VALUES)
def test_eq_and_ne_are_complements(value: Any) -> None:
    """For any stored value, exactly one of $eq and $ne holds for the same operand."""
    assume(validate({"data.v": value}) is None)  # at most MAX_COMPOSITE_NODES values
    event = event_view("T", "t", {"v": value})
    eq = compile_filter({"data.v": {"$eq": value}})(event)
    ne = compile_filter({"data.v": {"$ne": value}})(event)
    assert eq is True
    assert ne is False


SHALLOW = JSON_SCALARS | st.lists(JSON_SCALARS, max_size=3)


@given(JSON_VALUES, SHALLOW)
def test_in_and_nin_are_complements(stored: Any, candidate: Any) -> None:
    """$in and $nin of the same list always disagree, and $not inverts $in."""
    event = event_view("T", "t", {"v": stored})
    inside = compile_filter({"data.v": {"$in": [candidate]}})(event)
    assert compile_filter({"data.v": {"$nin": [candidate]}})(event) is not inside
    assert compile_filter({"data.v": {"$not": {"$in": [candidate]}}})(event) is not inside


@given(st.integers(-(2**53), 2**53), st.integers(-(2**53), 2**53))
def test_comparisons_agree_with_python_on_numbers(stored: int, operand: int) -> None:
    """$gt/$gte/$lt/$lte on numbers are the usual orderings."""
    event = event_view("T", "t", {"n": stored})
    for op, expected in [
        ("$gt", stored > operand),
        ("$gte", stored >= operand),
        ("$lt", stored < operand),
        ("$lte", stored <= operand),
    ]:
        assert compile_filter({"data.n": {op: operand}})(event) is expected


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (0, False, False),
        ([1, True], [1, True], True),
        ([1, True], [1, 1], False),
        ({"a": [1]}, {"a": [1]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        (None, None, True),
        ("1", 1, False),
    ],
)
def test_json_equal(left: Any, right: Any, equal: bool) -> None:
    """JSON equality never confuses booleans with numbers or strings with numbers."""
    assert json_equal(left, right) is equal
    assert json_equal(right, left) is equal
