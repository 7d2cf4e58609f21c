"""Evaluating a compiled filter on one event, in bounded work (``dispatcher.subscription.filters``).

``compile_spec`` turns a filter that ``filters.validate`` accepted into a closure over
the event view. The bounds that make the work per event small live here:
``MAX_SCAN`` values looked at per condition, one hash lookup per value for
``$eq``/``$ne``/``$in``/``$nin`` (arrays and objects keyed canonically, at most
``MAX_COMPOSITE_NODES`` steps per key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Values of the event one condition looks at, at most (resolution and element-wise tests).
MAX_SCAN = 256
# An array or object compared whole ($eq and friends) holds at most this many values.
MAX_COMPOSITE_NODES = 16
# What one value of such a key costs, in scalar tests (measured: about 10x).
COMPOSITE_WEIGHT = 8

# The event as a filter sees it: {"topic": ..., "tenant_id": ..., "data": {...}}.
Predicate = Callable[[Mapping[str, Any]], bool]
_Test = Callable[[Any], bool]


def nodes(value: Any) -> int:
    """How many JSON values ``value`` holds, itself included (a scalar is 1)."""
    if isinstance(value, dict):
        return 1 + sum(nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(nodes(v) for v in value)
    return 1


def comparable(value: Any) -> bool:
    """A string, or a number that is not a boolean: what ``$gt`` and friends compare."""
    return isinstance(value, str) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


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
    """The values at ``keys`` below ``current``, visiting at most MAX_SCAN values in all."""
    budget = MAX_SCAN
    for key in keys:
        found: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                budget -= 1
                if key in value:
                    found.append(value[key])
            elif isinstance(value, list):
                items = value[: max(budget, 0)]
                budget -= len(items)
                found += [item[key] for item in items if isinstance(item, dict) and key in item]
            if budget <= 0:
                break
        if not found or budget <= 0:
            return found
        current = found
    return current


def _compare(op: str, operand: Any) -> _Test:
    numeric = not isinstance(operand, str)

    def same_kind(value: Any) -> bool:
        if numeric:
            return comparable(value) and not isinstance(value, str)
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


class _TooLarge(Exception):
    """A value has more nodes than any choice it could equal."""


# Scalars whose Python equality is JSON equality (not bool: True == 1 in Python).
_PLAIN = frozenset({str, int, float, type(None)})


def _canonical(value: Any, budget: list[int]) -> Any:
    """A hashable key with JSON equality for ``value``, spending one of ``budget[0]`` per
    value; raises _TooLarge when the budget runs out (so no choice can equal it).

    An array or object of plain scalars is keyed as it is, in C (the common case and
    the adversary's cheapest near miss); one holding booleans, arrays or objects is
    keyed item by item. Which way is taken depends only on the content, so equal
    values always get equal keys.
    """
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
    budget[0] -= 1 + len(items)
    if budget[0] < 0:
        raise _TooLarge
    if not isinstance(value, list | dict):
        return _scalar_key(value)
    if _PLAIN.issuperset(map(type, items)):
        return ("a", tuple(value)) if isinstance(value, list) else ("o", frozenset(value.items()))
    budget[0] += len(items)  # each item below pays for itself
    if isinstance(value, list):
        return ("a", tuple(_canonical(item, budget) for item in value))
    return ("o", frozenset((key, _canonical(inner, budget)) for key, inner in value.items()))


def _shape(value: Any) -> tuple[bool, int] | None:
    """What two equal arrays or objects share, cheaply: kind and length; None for scalars."""
    if isinstance(value, list | dict):
        return (isinstance(value, list), len(value))
    return None


def _membership(choices: Sequence[Any]) -> _Test:
    """``value in choices`` under JSON equality: one hash lookup per value.

    Arrays and objects are keyed canonically; an event value gets a key only when its
    kind and length are those of a choice, and building it stops past the largest
    choice's size, so one test costs at most that many steps however large the value.
    """
    scalars = {key for key in map(_scalar_key, choices) if key is not None}
    composites = [choice for choice in choices if _scalar_key(choice) is None]
    keys = {_canonical(choice, [MAX_COMPOSITE_NODES + 1]) for choice in composites}
    shapes = {_shape(choice) for choice in composites}
    largest = max((nodes(choice) for choice in composites), default=0)

    def member(value: Any) -> bool:
        key = _scalar_key(value)
        if key is not None:
            return key in scalars
        if _shape(value) not in shapes:
            return False
        try:
            return _canonical(value, [largest]) in keys
        except _TooLarge:
            return False

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
        test = _membership([operand])
    elif op == "$in":
        test = _membership(operand)
    else:
        test = _compare(op, operand)

    def holds(values: list[Any]) -> bool:
        """``test`` on each value, or on any element of one that is an array; at most
        MAX_SCAN tests in all. Loops, not any(<generator>): this runs per event."""
        left = MAX_SCAN
        for value in values:
            if test(value):
                return True
            left -= 1
            if isinstance(value, list):
                for item in value[:left]:
                    if test(item):
                        return True
                left -= len(value)
            if left <= 0:
                return False
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


def compile_spec(spec: Mapping[str, Any]) -> Predicate:
    predicates: list[Predicate] = []
    for key, value in spec.items():
        if key == "$not":
            predicates.append(_negation(compile_spec(value)))
        elif key in ("$and", "$or"):
            parts = [compile_spec(item) for item in value]
            predicates.append(_combination(parts, every=key == "$and"))
        else:
            predicates += _path(key, value)
    if len(predicates) == 1:
        return predicates[0]
    return _combination(predicates, every=True)


def event_view(topic: str, tenant_id: str, data: Any) -> dict[str, Any]:
    """What a filter sees of an event."""
    return {"topic": topic, "tenant_id": tenant_id, "data": data}
