"""The cluster chaos harness's pure logic (runs in ``make test``; no broker)."""

from __future__ import annotations

import struct

import pytest

from tests.chaos.cluster import (
    PartitionState,
    _uvarint,
    busiest_leader,
    describe_quorum_request,
    isr_complete,
    parse_quorum_leader,
)
from tests.chaos.harness import Ledger, longest_gap


@pytest.mark.parametrize(
    ("arrivals", "gap"),
    [([], 0.0), ([5.0], 0.0), ([1.0, 2.0, 2.5], 1.0), ([9.0, 1.0, 4.0, 3.5], 5.0)],
)
def test_longest_gap(arrivals: list[float], gap: float) -> None:
    assert longest_gap(arrivals) == gap


def state(topic: str, partition: int, leader: int, isr: tuple[int, ...]) -> PartitionState:
    return PartitionState(topic, partition, leader, (1, 2, 3), isr)


@pytest.mark.parametrize(
    ("states", "complete"),
    [
        ([], False),
        ([state("d", 0, 1, (1, 2, 3)), state("d", 1, 2, (3, 2, 1))], True),
        ([state("d", 0, 1, (1, 2, 3)), state("d", 1, 2, (2, 1))], False),
        ([state("d", 0, -1, (1, 2, 3))], False),
    ],
)
def test_isr_complete(states: list[PartitionState], complete: bool) -> None:
    assert isr_complete(states) is complete


@pytest.mark.parametrize(
    ("leaders", "busiest"),
    [([3, 1, 3, 2], 3), ([2, 1, 1, 2], 1), ([-1, 2, -1], 2)],
)
def test_busiest_leader(leaders: list[int], busiest: int) -> None:
    states = [state("d", n, leader, (1, 2, 3)) for n, leader in enumerate(leaders)]
    states.append(state("other", 0, 1, (1, 2, 3)))
    assert busiest_leader(states, "d") == busiest


def test_busiest_leader_without_leaders() -> None:
    with pytest.raises(LookupError):
        busiest_leader([state("d", 0, -1, ())], "d")


def quorum_response(correlation_id: int, leader: int, error: int = 0) -> bytes:
    topic = b"__cluster_metadata"
    body = struct.pack(">i", correlation_id) + b"\x00" + struct.pack(">h", 0)
    body += _uvarint(2) + _uvarint(len(topic) + 1) + topic + _uvarint(2)
    body += struct.pack(">ihii", 0, error, leader, 12)  # index, error, leader, epoch...
    return body


def test_parse_quorum_leader() -> None:
    assert parse_quorum_leader(quorum_response(7, 2), 7) == 2
    with pytest.raises(OSError, match="another request"):
        parse_quorum_leader(quorum_response(8, 2), 7)
    with pytest.raises(OSError, match="error 6"):
        parse_quorum_leader(quorum_response(7, 2, error=6), 7)


def test_describe_quorum_request_header() -> None:
    request = describe_quorum_request(7)
    size, api, version, correlation = struct.unpack_from(">ihhi", request)
    assert (size, api, version, correlation) == (len(request) - 4, 55, 0, 7)
    assert b"__cluster_metadata" in request


@pytest.mark.parametrize(
    ("unhealthy", "recovery"), [(frozenset(), 28.0), (frozenset({"hook1"}), 3.0)]
)
def test_recovery_leaves_out_unhealthy_webhooks(unhealthy: frozenset[str], recovery: float) -> None:
    """A parked webhook's late deliveries are its unparking, not the disruption's backlog."""
    ledger = Ledger("t", {"w0": "hook0", "w1": "hook1"}, {"e1": 1.0, "e2": 9.0})
    first_seen = {("w0", "e1"): 5.0, ("w1", "e1"): 30.0, ("w0", "e2"): 9.5}
    assert ledger._recovery(2.0, first_seen, unhealthy) == recovery
