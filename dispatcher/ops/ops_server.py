"""The operations endpoints of every process, on HOOKLANE_METRICS_HOST:METRICS_PORT.

- ``GET /metrics``: the process's registry in the Prometheus text format.
- ``GET /healthz``: 200 while the process runs (liveness).
- ``GET /readyz``: 200 when every readiness check passes, else 503 with
  ``{"checks": {"<name>": {"ok": false, "error": "..."}}}`` (readiness).

A separate small server, not routes on the API's app: the router and deliverer have
no HTTP server of their own, and probes keep answering while the API is saturated.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from dispatcher.ops.readiness import Check, run_checks

log = structlog.get_logger(__name__)


class OpsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz``; ``start()`` then ``close()``."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, checks: Mapping[str, Check]
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._checks = checks  # not copied: the process registers checks as it starts
        # What failed at the last probe: logged when it changes, not at every probe
        # (an orchestrator probes every few seconds).
        self._failed: dict[str, str] = {}
        app = web.Application()
        app.router.add_get("/metrics", self._metrics, allow_head=False)
        app.router.add_get("/healthz", self._healthz, allow_head=False)
        app.router.add_get("/readyz", self._readyz, allow_head=False)
        self._runner = web.AppRunner(app, access_log=None)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:9400``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; OSError when the port is taken."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            raise
        except Exception as exc:
            # Two processes racing for one port can leave aiohttp's site without a
            # socket (AttributeError on uvloop) instead of raising EADDRINUSE: the same
            # trouble, reported the same way, so the process keeps delivering.
            raise OSError(f"cannot serve on {self.url}: {exc!r}") from exc
        log.info("ops.listening", url=self.url)

    async def close(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def _readyz(self, request: web.Request) -> web.Response:
        results = await run_checks(self._checks)
        ok = all(result["ok"] for result in results.values())
        failed = {name: str(r["error"]) for name, r in results.items() if not r["ok"]}
        if failed and failed != self._failed:
            log.warning("ops.not_ready", failed=failed)
        elif self._failed and not failed:
            log.info("ops.ready")
        self._failed = failed
        return _json({"checks": results}, 200 if ok else 503)


def _json(value: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")
