"""The stored payload format is zlib whatever the compressor's memory settings."""

from __future__ import annotations

import zlib

import orjson

from dispatcher.store import events as event_store

DATA = {"registration_id": "reg_1", "pad": "x" * 900, "items": [{"n": i} for i in range(50)]}


def test_rows_written_before_still_unpack() -> None:
    """A payload compressed with zlib's defaults (rows of earlier versions) unpacks."""
    assert event_store.unpack(zlib.compress(orjson.dumps(DATA), 1)) == DATA


def test_packed_payloads_are_plain_zlib() -> None:
    """Anything that reads zlib (SQL tools, older versions) reads what pack writes."""
    packed = event_store.pack(DATA)
    assert orjson.loads(zlib.decompress(packed)) == DATA
    assert len(packed) < len(orjson.dumps(DATA)) // 4
