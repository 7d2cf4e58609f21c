"""The API's request metrics (route templates, not raw paths) and its ops endpoints."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from dispatcher.kafka.broker import free_port
from dispatcher.ops.metrics import build_registry
from dispatcher.settings import Settings
from tests.conftest import TenantKey


async def test_requests_are_counted_by_route_template(
    settings: Settings, tenant: TenantKey
) -> None:
    """Ids in paths collapse into their template; unknown paths share `unmatched`."""
    families = build_registry(("api",))
    async with TestClient(TestServer(create_app(settings, families))) as client:
        for _ in range(2):
            response = await client.get(f"/webhooks/{uuid.uuid4()}", headers=tenant.headers)
            assert response.status == 404
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/webhooks")).status == 401  # no API key
        assert (await client.get(f"/no/such/{uuid.uuid4()}")).status == 404
    get = families.registry.get_sample_value
    requests = "hooklane_http_requests_total"
    assert get(requests, {"method": "GET", "route": "/webhooks/{id}", "status": "404"}) == 2.0
    assert get(requests, {"method": "GET", "route": "/healthz", "status": "200"}) == 1.0
    assert get(requests, {"method": "GET", "route": "/webhooks", "status": "401"}) == 1.0
    assert get(requests, {"method": "GET", "route": "unmatched", "status": "404"}) == 1.0
    duration = "hooklane_http_request_duration_seconds_count"
    assert get(duration, {"route": "/webhooks/{id}"}) == 2.0
    routes = {
        sample.labels["route"]
        for family in families.registry.collect()
        if family.name == "hooklane_http_requests"
        for sample in family.samples
    }
    assert routes == {"/webhooks/{id}", "/healthz", "/webhooks", "unmatched"}


async def test_api_process_serves_ops_endpoints_on_the_metrics_port(settings: Settings) -> None:
    """`python -m api` serves /metrics (with its requests), /healthz and /readyz."""
    api_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "HOOKLANE_DATABASE_URL": settings.database_url,
        "HOOKLANE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "HOOKLANE_SECRET_KEY": settings.secret_key or "",
        "HOOKLANE_API_PORT": str(api_port),
        "HOOKLANE_METRICS_PORT": str(metrics_port),
        "HOOKLANE_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{api_port}/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            ops = f"http://127.0.0.1:{metrics_port}"
            async with session.get(ops + "/readyz") as response:
                assert response.status == 200, await response.text()
                assert await response.json() == {
                    "checks": {"postgres": {"ok": True}, "kafka": {"ok": True}}
                }
            async with session.get(ops + "/healthz") as response:
                assert response.status == 200
            async with session.get(ops + "/metrics") as response:
                text = await response.text()
        samples = {
            (s.name, s.labels.get("route")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("hooklane_http_requests_total", "/healthz")] >= 1
        assert ("hooklane_event_loop_lag_seconds", None) in samples
        assert ("hooklane_build_info", None) in samples
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()
