"""W3C Trace Context (``traceparent`` / ``tracestate``): parsing, minting, headers.

An event's trace context comes from its Kafka record's headers or from ``POST
/events``' request headers; without one, the router mints a fresh trace for the event.
It rides in every delivery task of the event (``dispatcher.messages.wire``) and in the
``events`` table (replays), and each delivered request carries it as ``traceparent``
with the attempt's own parent id (``for_attempt``). Pure functions; no OpenTelemetry:
propagation is always on, spans (``dispatcher.ops.tracing``) only when exporting.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping

from dispatcher.values import immutable

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# https://www.w3.org/TR/trace-context/#traceparent-header-field-values: a version this
# code does not know is read as version 00 when it has the 00 fields (and propagated
# as 00); version ff is invalid; version 00 has nothing after the flags.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_CANONICAL = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Propagators may drop a tracestate over 512 characters; its values are printable ASCII.
MAX_TRACESTATE = 512
_TRACESTATE_CHARS = re.compile(r"[\x20-\x7e]*")
SAMPLED = "01"

_random = random.Random()


@immutable
class TraceContext:
    """A validated ``traceparent`` (version 00) and its ``tracestate`` ("" when none)."""

    traceparent: str
    tracestate: str = ""

    @property
    def trace_id(self) -> str:
        """The 32 hex digits of the trace id."""
        return self.traceparent[3:35]

    @property
    def span_id(self) -> str:
        """The 16 hex digits of the parent id (the span that sent it)."""
        return self.traceparent[36:52]

    @property
    def flags(self) -> str:
        """The two hex digits of the trace flags (``01``: sampled)."""
        return self.traceparent[53:55]

    def headers(self) -> dict[str, str]:
        """The HTTP headers that carry this context."""
        if self.tracestate:
            return {TRACEPARENT: self.traceparent, TRACESTATE: self.tracestate}
        return {TRACEPARENT: self.traceparent}

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The Kafka record headers that carry this context."""
        headers = [(TRACEPARENT, self.traceparent.encode())]
        if self.tracestate:
            headers.append((TRACESTATE, self.tracestate.encode()))
        return headers


def parse(traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
    """The context of a ``traceparent`` header value, or None when it is not a valid one.

    An invalid ``tracestate`` is dropped (the trace still continues), as the
    specification asks of a receiver.
    """
    if traceparent is None:
        return None
    # The form Hooklane itself writes (every delivery task): one regex, no rebuild.
    if len(traceparent) == 55 and _CANONICAL.fullmatch(traceparent):
        parent: str | None = traceparent
    else:
        parent = _normalised(traceparent)
    if parent is None or parent[3:35] == _ZERO_TRACE or parent[36:52] == _ZERO_SPAN:
        return None
    if not tracestate:
        return TraceContext(parent)
    state = tracestate.strip()
    if len(state) > MAX_TRACESTATE or not _TRACESTATE_CHARS.fullmatch(state):
        state = ""
    return TraceContext(parent, state)


def _normalised(traceparent: str) -> str | None:
    if len(traceparent) > 512:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    return f"00-{trace_id}-{span_id}-{flags}"


def from_http(headers: Mapping[str, str]) -> TraceContext | None:
    """The context of a request's ``traceparent``/``tracestate`` headers, or None."""
    traceparent = headers.get(TRACEPARENT)
    if traceparent is None:
        return None
    return parse(traceparent, headers.get(TRACESTATE))


def from_kafka(headers: Iterable[tuple[str, bytes | None]] | None) -> TraceContext | None:
    """The context of a Kafka record's headers (the first of each name), or None."""
    if not headers:
        return None
    traceparent: str | None = None
    tracestate: str | None = None
    for name, value in headers:
        if value is None:
            continue
        if name == TRACEPARENT and traceparent is None:
            traceparent = value.decode("ascii", "replace")
        elif name == TRACESTATE and tracestate is None:
            tracestate = value.decode("ascii", "replace")
    return parse(traceparent, tracestate)


def _span_id() -> str:
    return f"{_random.getrandbits(64) | 1:016x}"  # never the invalid all-zero id


def fresh() -> TraceContext:
    """A new trace (sampled, so receivers' parent-based samplers record it)."""
    return TraceContext(f"00-{_random.getrandbits(128) | 1:032x}-{_span_id()}-{SAMPLED}")


def derived(tenant_id: str, event_id: str) -> TraceContext:
    """The trace of an event that reached the deliverer without one (a task written
    before trace contexts existed): derived from the event's identity, so every
    attempt of that event still shares one trace id."""
    digest = hashlib.blake2b(f"{tenant_id}\0{event_id}".encode(), digest_size=24).hexdigest()
    return TraceContext(f"00-{digest[:32]}-{digest[32:]}-{SAMPLED}")


def for_attempt(context: TraceContext) -> TraceContext:
    """``context`` as one delivery attempt sends it: the same trace, a new parent id."""
    parent = context.traceparent
    return TraceContext(f"{parent[:36]}{_span_id()}{parent[52:]}", context.tracestate)
