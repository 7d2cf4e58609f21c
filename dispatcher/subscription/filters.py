"""Payload filters: which events a webhook wants, decided by the router in memory.

A filter is a JSON object of conditions on the event's ``topic``, ``tenant_id`` and
``data`` (dotted paths such as ``data.customer.country``)::

    {"data.amount": {"$gte": 100}, "$or": [{"data.country": "US"}, {"data.country": "CA"}]}

- Keys of one object are ANDed. A key is a path or ``$and``/``$or`` (a non-empty list
  of filters) or ``$not`` (a filter).
- A path's value is a literal (``$eq``), an object of operators (``$eq $ne $gt $gte
  $lt $lte $in $nin $exists $not``) or an object without ``$`` keys, read as nested
  paths (``{"data": {"amount": {"$gt": 1}}}`` is ``{"data.amount": {"$gt": 1}}``).
- Arrays are matched element-wise, as Convoy and MongoDB do: a path through an array
  of objects reaches each element's field, and a condition holds when it holds for the
  array itself or for any element (``{"data.tags": "vip"}`` matches ``["new", "vip"]``).
  ``$ne`` and ``$nin`` are the negations (no element equal, none in the list), so a
  missing field satisfies them.
- Equality is JSON equality: ``true`` is not ``1``. ``$gt``-style operators compare
  numbers with numbers and strings with strings; other pairs do not match.

``validate`` finds the first problem (with its JSON pointer) so the API can answer
422; ``compile_filter`` turns a valid filter into a closure once per webhook version,
so no path is parsed per event.

The work per event is bounded, whatever the filter and the event, so one tenant's
filter cannot slow the router for everybody:

- A condition looks at no more than ``MAX_SCAN`` values of the event: the values its
  path reaches (stepping into arrays) and, for element-wise matching, their elements,
  in document order. Values past the first ``MAX_SCAN`` are not looked at.
- ``$eq``/``$ne``/``$in``/``$nin`` are one hash lookup per value looked at, whatever the
  number of choices: scalars by value, arrays and objects (each at most
  ``MAX_COMPOSITE_NODES`` values, else refused) by a canonical key built only for an
  event value of a choice's shape, and never beyond the largest choice's size.
- Each condition has a cost, ``MAX_SCAN`` times the values it may touch per value it
  looks at (``condition_cost``); a filter's total is at most ``MAX_COST``, checked when
  it is created. With ``MAX_CONDITIONS`` and ``MAX_DEPTH`` this bounds an event's
  filter evaluation to ``MAX_COST`` value visits (``dispatcher/bench/filter_cost.py``
  measures the worst case).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dispatcher.subscription.filter_match import (
    COMPOSITE_WEIGHT,
    MAX_COMPOSITE_NODES,
    MAX_SCAN,
    Predicate,
    comparable,
    compile_spec,
    event_view,
    json_equal,
    nodes,
)

__all__ = [
    "MAX_COMPOSITE_NODES",
    "MAX_SCAN",
    "FilterProblem",
    "InvalidFilter",
    "Predicate",
    "compile_filter",
    "event_view",
    "json_equal",
    "validate",
]

MAX_DEPTH = 8
MAX_BYTES = 4096
MAX_CONDITIONS = 64
# Per event, a filter visits at most this many values: a filter of MAX_CONDITIONS
# conditions on scalars fits; arrays and objects compared whole spend the rest.
MAX_COST = MAX_CONDITIONS * 3 * MAX_SCAN
ROOTS = frozenset({"topic", "tenant_id", "data"})
COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPERATORS = frozenset({"$eq", "$ne", *COMPARISONS, "$in", "$nin", "$exists", "$not"})
LOGICAL = frozenset({"$and", "$or", "$not"})


@dataclass(frozen=True, slots=True)
class FilterProblem:
    """Why a filter is refused: ``path`` is a JSON pointer into the filter."""

    path: str
    message: str


class InvalidFilter(ValueError):
    """``compile_filter`` was given a filter ``validate`` refuses."""

    def __init__(self, problem: FilterProblem) -> None:
        super().__init__(f"{problem.path or '/'}: {problem.message}")
        self.problem = problem


def _escape(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")  # RFC 6901


class _Checker:
    """One validation pass; raises ``InvalidFilter`` at the first problem."""

    def __init__(self) -> None:
        self.conditions = 0
        self.cost = 0

    def fail(self, pointer: str, message: str) -> None:
        raise InvalidFilter(FilterProblem(pointer, message))

    def count(self, pointer: str, choices: Sequence[Any] = (), *, listed: bool = False) -> None:
        """One more condition, comparing with ``choices`` (a ``$in`` list when ``listed``),
        and its cost."""
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            self.fail(pointer, f"a filter has at most {MAX_CONDITIONS} conditions")
        for index, choice in enumerate(choices):
            if nodes(choice) > MAX_COMPOSITE_NODES:
                self.fail(
                    f"{pointer}/{index}" if listed else pointer,
                    f"an array or object to compare with holds at most {MAX_COMPOSITE_NODES}"
                    " values",
                )
        self.cost += condition_cost(choices)
        if self.cost > MAX_COST:
            self.fail(
                pointer,
                f"the filter may cost too much per event (estimate {self.cost} > {MAX_COST}"
                " value visits): compare with fewer or smaller arrays and objects",
            )

    def depth(self, pointer: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(pointer, f"a filter nests at most {MAX_DEPTH} levels")

    def filter(self, node: Any, pointer: str, depth: int, prefix: str = "") -> None:
        self.depth(pointer, depth)
        if not isinstance(node, dict):
            self.fail(pointer, "a filter is a JSON object of conditions")
        for key, value in node.items():
            at = pointer + _escape(key)
            if key.startswith("$"):
                if prefix or key not in LOGICAL:
                    known = "$and, $or, $not" if not prefix else "a path or $and, $or, $not"
                    self.fail(at, f"unknown operator {key!r} here (expected {known})")
                self.logical(key, value, at, depth + 1)
            else:
                self.path(prefix + key, value, at, depth + 1)

    def logical(self, key: str, value: Any, pointer: str, depth: int) -> None:
        self.count(pointer)
        if key == "$not":
            self.filter(value, pointer, depth)
            return
        if not isinstance(value, list) or not value:
            self.fail(pointer, f"{key} takes a non-empty list of filters")
        self.depth(pointer, depth)
        for index, item in enumerate(value):
            self.filter(item, f"{pointer}/{index}", depth + 1)

    def path(self, path: str, value: Any, pointer: str, depth: int) -> None:
        parts = path.split(".")
        if parts[0] not in ROOTS or any(not part for part in parts):
            self.fail(pointer, f"{path!r} is not a field: use topic, tenant_id or data.<path>")
        if parts[0] != "data" and len(parts) > 1:
            self.fail(pointer, f"{parts[0]} has no fields")
        if isinstance(value, dict) and value and not any(k.startswith("$") for k in value):
            if parts[0] != "data":
                self.fail(pointer, f"{parts[0]} has no fields")
            self.depth(pointer, depth)
            for key, inner in value.items():
                self.path(f"{path}.{key}", inner, pointer + _escape(key), depth + 1)
            return
        if isinstance(value, dict) and value:
            self.operators(value, pointer, depth)
        else:
            self.depth(pointer, depth + _nesting(value))
            self.count(pointer, [value])  # a literal: $eq

    def operators(self, ops: dict[str, Any], pointer: str, depth: int) -> None:
        self.depth(pointer, depth)
        for op, operand in ops.items():
            at = pointer + _escape(op)
            if op not in FIELD_OPERATORS:
                self.fail(at, f"unknown operator {op!r} (expected one of {_listed()})")
            if op == "$not":
                self.count(at)
                if not isinstance(operand, dict) or not operand:
                    self.fail(at, '$not takes an object of operators, e.g. {"$gt": 5}')
                if not all(key.startswith("$") for key in operand):
                    self.fail(at, '$not takes an object of operators, e.g. {"$gt": 5}')
                self.operators(operand, at, depth + 1)
            elif op == "$exists":
                if not isinstance(operand, bool):
                    self.fail(at, "$exists takes true or false")
                self.count(at)
            elif op in COMPARISONS:
                if not comparable(operand):
                    self.fail(at, f"{op} takes a number or a string")
                self.count(at)
            elif op in ("$in", "$nin"):
                if not isinstance(operand, list):
                    self.fail(at, f"{op} takes a list of values")
                self.depth(at, depth + 1 + _nesting(operand))
                self.count(at, operand, listed=True)
            else:
                self.depth(at, depth + 1 + _nesting(operand))
                self.count(at, [operand])


def _nesting(value: Any) -> int:
    """How many levels of arrays/objects a literal adds."""
    if isinstance(value, dict):
        return 1 + max((_nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_nesting(v) for v in value), default=0)
    return 0


def condition_cost(choices: Sequence[Any]) -> int:
    """The most values one condition comparing with ``choices`` visits per event.

    Resolving its path visits up to MAX_SCAN values, and so does testing them; each
    test of a value against arrays or objects may build a key of up to the largest
    choice's size (``filter_match._membership``), each of its values costing
    COMPOSITE_WEIGHT scalar tests.
    """
    largest = max((nodes(c) for c in choices if isinstance(c, list | dict)), default=0)
    return MAX_SCAN * (2 + COMPOSITE_WEIGHT * largest)


def _listed() -> str:
    return ", ".join(sorted(FIELD_OPERATORS))


def validate(spec: Any) -> FilterProblem | None:
    """The first problem of filter ``spec`` (pointer relative to the filter), or None."""
    try:
        size = len(orjson.dumps(spec))
    except TypeError:
        return FilterProblem("", "a filter is JSON")
    if size > MAX_BYTES:
        return FilterProblem("", f"a filter is at most {MAX_BYTES} bytes of JSON ({size} given)")
    try:
        _Checker().filter(spec, "", 1)
    except InvalidFilter as exc:
        return exc.problem
    return None


def compile_filter(spec: Any) -> Predicate:
    """The filter as a closure over the event view; raises ``InvalidFilter`` when invalid."""
    problem = validate(spec)
    if problem is not None:
        raise InvalidFilter(problem)
    return compile_spec(spec)
