"""A loopback OTLP/HTTP endpoint that accepts spans and keeps only counts.

``hooklane bench --tracing`` points the router and deliverer at it (sampling 1.0), so
the run measures what exporting every span costs them; decoding is not its business
(the export test decodes, tests/support/otlp_receiver.py). It runs in the bench's own process.
"""

from __future__ import annotations

from aiohttp import web


class OtlpSink:
    """``POST /v1/traces`` answered 200 with an empty export response; counted."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        """The ``OTEL_EXPORTER_OTLP_ENDPOINT`` value."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _traces(self, request: web.Request) -> web.Response:
        self.bytes += len(await request.read())
        self.requests += 1
        # An empty ExportTraceServiceResponse is zero bytes of protobuf.
        return web.Response(body=b"", content_type="application/x-protobuf")
