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


def test_the_window_never_costs_ratio() -> None:
    """Small or large, the payload compresses as well as with zlib's 32 KB window."""
    for size in (10, 700, 5000, 40_000):
        data = {"pad": ("abcdefghij" * 7 + "0123")[: size % 97 + 3] * (size // 80 + 1)}
        raw = orjson.dumps(data)
        full = zlib.compressobj(1, zlib.DEFLATED, 15, event_store.MEM_LEVEL)
        reference = full.compress(raw) + full.flush()
        packed = event_store.pack(data)
        assert len(packed) == len(reference)
        assert event_store.unpack(packed) == data
