"""The replay store's payload format: LZ4 behind a marker byte; older zlib rows still read."""

from __future__ import annotations

import zlib

import lz4.block
import orjson
import pytest

from dispatcher.store import events as event_store

DATA = {"registration_id": "reg_1", "pad": "x" * 900, "items": [{"n": i} for i in range(50)]}


@pytest.mark.parametrize("level", [1, 6, 9])
@pytest.mark.parametrize("wbits", [10, 15])
def test_rows_written_before_still_unpack(level: int, wbits: int) -> None:
    """zlib payloads of earlier versions (any level, any window) unpack unchanged."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, wbits, 4)
    older = compressor.compress(orjson.dumps(DATA)) + compressor.flush()
    assert event_store.unpack(older) == DATA


def test_the_marker_never_starts_a_zlib_stream() -> None:
    """Every zlib stream starts with CMF 0x?8 (deflate), so the marker is unambiguous."""
    streams = [zlib.compressobj(1, zlib.DEFLATED, wbits) for wbits in range(9, 16)]
    firsts = {(c.compress(b"x") + c.flush())[:1] for c in streams}
    firsts |= {zlib.compress(b"x" * n, level)[:1] for n in (0, 1, 5000) for level in range(10)}
    assert event_store.LZ4_MARKER not in firsts
    assert all(first[0] & 0x0F == 8 for first in firsts)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"a": 1},
        DATA,
        {"text": "é漢字🙂" * 300, "nested": {"list": [None, True, 1.5, -2, "s"] * 40}},
        {"big": "".join(chr(33 + (i * 7919) % 90) for i in range(200_000))},
    ],
    ids=["empty", "tiny", "repetitive", "unicode", "200k-varied"],
)
def test_packed_payloads_round_trip(data: dict[str, object]) -> None:
    packed = event_store.pack(data)
    assert packed[:1] == event_store.LZ4_MARKER
    assert orjson.loads(lz4.block.decompress(packed[1:])) == data  # plain LZ4 block format
    assert event_store.unpack(packed) == data


def test_repetitive_json_compresses() -> None:
    assert len(event_store.pack(DATA)) < len(orjson.dumps(DATA)) // 4


def test_a_corrupt_payload_raises_instead_of_returning_garbage() -> None:
    packed = event_store.pack(DATA)
    with pytest.raises(lz4.block.LZ4BlockError):
        event_store.unpack(packed[:-10])
    with pytest.raises(zlib.error):
        event_store.unpack(b"\x78garbage")
