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
so no path is parsed per event. Filters are bounded (``MAX_DEPTH``, ``MAX_BYTES``,
``MAX_CONDITIONS``) so one tenant's filter cannot slow the router for everybody.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MAX_DEPTH = 8
MAX_BYTES = 4096
MAX_CONDITIONS = 64
ROOTS = frozenset({"topic", "tenant_id", "data"})
COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPERATORS = frozenset({"$eq", "$ne", *COMPARISONS, "$in", "$nin", "$exists", "$not"})
LOGICAL = frozenset({"$and", "$or", "$not"})

# The event as a filter sees it: {"topic": ..., "tenant_id": ..., "data": {...}}.
Predicate = Callable[[Mapping[str, Any]], bool]
_Test = Callable[[Any], bool]


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

    def fail(self, pointer: str, message: str) -> None:
        raise InvalidFilter(FilterProblem(pointer, message))

    def count(self, pointer: str) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            self.fail(pointer, f"a filter has at most {MAX_CONDITIONS} conditions")

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
            self.count(pointer)  # a literal: $eq
            self.depth(pointer, depth + _nesting(value))

    def operators(self, ops: dict[str, Any], pointer: str, depth: int) -> None:
        self.depth(pointer, depth)
        for op, operand in ops.items():
            at = pointer + _escape(op)
            if op not in FIELD_OPERATORS:
                self.fail(at, f"unknown operator {op!r} (expected one of {_listed()})")
            self.count(at)
            if op == "$not":
                if not isinstance(operand, dict) or not operand:
                    self.fail(at, '$not takes an object of operators, e.g. {"$gt": 5}')
                if not all(key.startswith("$") for key in operand):
                    self.fail(at, '$not takes an object of operators, e.g. {"$gt": 5}')
                self.operators(operand, at, depth + 1)
            elif op == "$exists":
                if not isinstance(operand, bool):
                    self.fail(at, "$exists takes true or false")
            elif op in COMPARISONS:
                if not _comparable(operand):
                    self.fail(at, f"{op} takes a number or a string")
            elif op in ("$in", "$nin"):
                if not isinstance(operand, list):
                    self.fail(at, f"{op} takes a list of values")
                self.depth(at, depth + 1 + _nesting(operand))
            else:
                self.depth(at, depth + 1 + _nesting(operand))


def _nesting(value: Any) -> int:
    """How many levels of arrays/objects a literal adds."""
    if isinstance(value, dict):
        return 1 + max((_nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_nesting(v) for v in value), default=0)
    return 0


def _listed() -> str:
    return ", ".join(sorted(FIELD_OPERATORS))


def _comparable(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


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


# -- evaluation ---------------------------------------------------------------------


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: like ``==`` but booleans never equal numbers (``True != 1``)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(value, right[key]) for key, value in left.items())
        )
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    return bool(left == right)  # scalars: 1 == 1.0, "1" != 1


def _resolve(document: Mapping[str, Any], keys: Sequence[str]) -> list[Any]:
    """Every value at ``keys``, stepping into each element of arrays on the way."""
    value: Any = document
    for index, key in enumerate(keys):
        # The common case, objects all the way down, without building lists.
        if isinstance(value, dict):
            if key not in value:
                return []
            value = value[key]
        else:
            return _resolve_through_arrays([value], keys[index:])
    return [value]


def _resolve_through_arrays(current: list[Any], keys: Sequence[str]) -> list[Any]:
    for key in keys:
        found: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                if key in value:
                    found.append(value[key])
            elif isinstance(value, list):
                found += [item[key] for item in value if isinstance(item, dict) and key in item]
        if not found:
            return found
        current = found
    return current


def _any_element(test: _Test) -> _Test:
    """``test`` on a value, or on any element when the value is an array."""

    def holds(value: Any) -> bool:
        if test(value):
            return True
        if isinstance(value, list):
            for item in value:
                if test(item):
                    return True
        return False

    return holds


def _compare(op: str, operand: Any) -> _Test:
    numeric = not isinstance(operand, str)

    def same_kind(value: Any) -> bool:
        if numeric:
            return _comparable(value) and not isinstance(value, str)
        return isinstance(value, str)

    if op == "$gt":
        return lambda value: same_kind(value) and value > operand
    if op == "$gte":
        return lambda value: same_kind(value) and value >= operand
    if op == "$lt":
        return lambda value: same_kind(value) and value < operand
    return lambda value: same_kind(value) and value <= operand


def _scalar_key(value: Any) -> tuple[str, Any] | None:
    """A hashable key with JSON equality for scalars (``True`` and ``1`` differ); None
    for arrays and objects."""
    if value is None or isinstance(value, str):
        return ("s", value)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)  # 1 and 1.0 hash alike, as JSON equality wants
    return None


def _membership(choices: Sequence[Any]) -> _Test:
    """``value in choices`` under JSON equality: a set lookup for scalars."""
    scalars = {key for key in map(_scalar_key, choices) if key is not None}
    composites = [choice for choice in choices if _scalar_key(choice) is None]

    def member(value: Any) -> bool:
        key = _scalar_key(value)
        if key is not None:
            return key in scalars
        return any(json_equal(value, choice) for choice in composites)

    return member


def _operator(op: str, operand: Any) -> Callable[[list[Any]], bool]:
    """A test over the values a path resolved to."""
    if op == "$exists":
        wanted = bool(operand)
        return lambda values: bool(values) is wanted
    if op == "$not":
        inner = _operators(operand)
        return lambda values: not inner(values)
    if op in ("$ne", "$nin"):
        positive = _operator("$eq" if op == "$ne" else "$in", operand)
        return lambda values: not positive(values)
    if op == "$eq":
        test = _any_element(_membership([operand]))
    elif op == "$in":
        test = _any_element(_membership(operand))
    else:
        test = _any_element(_compare(op, operand))

    def holds(values: list[Any]) -> bool:
        # A loop, not any(<generator>): this runs per event and condition.
        for value in values:  # noqa: SIM110
            if test(value):
                return True
        return False

    return holds


def _operators(ops: Mapping[str, Any]) -> Callable[[list[Any]], bool]:
    tests = [_operator(op, operand) for op, operand in ops.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda values: all(test(values) for test in tests)


def _path(path: str, value: Any) -> list[Predicate]:
    if isinstance(value, dict) and value and not any(k.startswith("$") for k in value):
        return [p for key, inner in value.items() for p in _path(f"{path}.{key}", inner)]
    keys = tuple(path.split("."))
    test = _operators(value) if isinstance(value, dict) and value else _operator("$eq", value)
    return [lambda event: test(_resolve(event, keys))]


def _negation(inner: Predicate) -> Predicate:
    return lambda event: not inner(event)


def _combination(parts: Sequence[Predicate], every: bool) -> Predicate:
    if every:
        return lambda event: all(part(event) for part in parts)
    return lambda event: any(part(event) for part in parts)


def _compile(spec: Mapping[str, Any]) -> Predicate:
    predicates: list[Predicate] = []
    for key, value in spec.items():
        if key == "$not":
            predicates.append(_negation(_compile(value)))
        elif key in ("$and", "$or"):
            parts = [_compile(item) for item in value]
            predicates.append(_combination(parts, every=key == "$and"))
        else:
            predicates += _path(key, value)
    if len(predicates) == 1:
        return predicates[0]
    return _combination(predicates, every=True)


def compile_filter(spec: Any) -> Predicate:
    """The filter as a closure over the event view; raises ``InvalidFilter`` when invalid."""
    problem = validate(spec)
    if problem is not None:
        raise InvalidFilter(problem)
    return _compile(spec)


def event_view(topic: str, tenant_id: str, data: Any) -> dict[str, Any]:
    """What a filter sees of an event."""
    return {"topic": topic, "tenant_id": tenant_id, "data": data}
