"""A loopback OTLP/HTTP trace receiver for tests: what a collector would get, decoded.

``POST /v1/traces`` bodies are ``ExportTraceServiceRequest`` protobufs (gzip or not),
decoded with the official ``opentelemetry-proto`` package into flat ``Span`` records.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from dispatcher.bench.otlp_sink import OtlpSink


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class Span:
    """One exported span, with its ids as hex and its attributes as a dict."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: dict[str, int]  # name -> time (ns)
    service: str
    status_code: int


class OtlpReceiver(OtlpSink):
    """Collects the spans exported to ``endpoint`` (``OTEL_EXPORTER_OTLP_ENDPOINT``):
    the bench's sink, decoding what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[Span] = []
        self.headers: list[dict[str, str]] = []

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]

    async def __aenter__(self) -> OtlpReceiver:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bytes += len(body)
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests += 1
        self.headers.append(dict(request.headers))
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        Span(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events={e.name: e.time_unix_nano for e in span.events},
                            service=str(resource.get("service.name")),
                            status_code=span.status.code,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )
