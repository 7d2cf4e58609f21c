"""``immutable`` records: value semantics at runtime, frozen for mypy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mypy import api as mypy_api

from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.values import immutable


@immutable
class Point:
    x: int
    y: int = 0


def test_records_compare_and_hash_by_their_fields() -> None:
    assert Point(1, 2) == Point(1, 2) != Point(2, 1)
    assert len({Point(1, 2), Point(1, 2), Point(1)}) == 2
    assert dataclasses.replace(Point(1, 2), y=5) == Point(1, 5)


def test_records_have_slots_and_no_instance_dict() -> None:
    assert not hasattr(Point(1), "__dict__")
    task = DeliveryTask("wh_1", Event("evt_1", "T", "ten", 1, {"a": 1}))
    assert not hasattr(task, "__dict__") and not hasattr(task.event, "__dict__")


def test_mypy_rejects_assigning_a_field(tmp_path: Path) -> None:
    """The immutability is the type checker's to enforce: it must refuse this."""
    source = tmp_path / "assigns.py"
    source.write_text(
        "from dispatcher.messages.wire import Event\n"
        "def rename(event: Event) -> None:\n"
        "    event.topic = 'OTHER'\n"
    )
    out, _err, status = mypy_api.run(
        ["--no-incremental", "--follow-imports=silent", "--config-file=", str(source)]
    )
    assert status == 1, out
    assert 'Property "topic" defined in "Event" is read-only' in out
