"""No secret of a delivery option (auth password, bearer token, OAuth client secret and
access token, v1a private key, TLS client key) appears in any API read, log line or
metric, nor in plaintext in the database.

The API, router and deliverer run as real subprocesses with DEBUG JSON logs and webhook
metric labels on, through a full flow: create, update, test-trigger, publish, deliver
(including a failing token endpoint), read everything back, scrape every /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from dispatcher.delivery.secrets import SecretBox
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.client_tls import MutualTLS, mtls_receiver
from tests.support.pipeline import ensure_mirror_topics, settings_env, wait_until
from tests.support.receiver import Receiver
from tests.test_secrets_logs import _api_up, free_port, read_logs

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
PASSWORD = "basic-pw-Hq7Zk2"
BEARER = "bearer-tok-Wd9Xy4"
CLIENT_SECRET = "client-secret-Lp3Vn8"
ACCESS_TOKEN = "access-token-Rt5Mb1"
BROKEN_SECRET = "client-secret-Broken6"


@contextlib.asynccontextmanager
async def services(env: dict[str, str], logs: Path) -> AsyncIterator[list[int]]:
    """API, router and deliverer subprocesses; yields their metrics ports."""
    processes, ports = [], []
    try:
        for name, module in [
            ("api", "api"),
            ("router", "dispatcher.router"),
            ("deliverer", "dispatcher.deliverer"),
        ]:
            ports.append(free_port())
            with (logs / f"{name}.log").open("wb") as out:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        module,
                        env={**env, "HOOKLANE_METRICS_PORT": str(ports[-1])},
                        stdout=out,
                        stderr=out,
                    )
                )
        yield ports
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def token_endpoints() -> AsyncIterator[str]:
    """``/good`` issues ACCESS_TOKEN; ``/broken`` answers 500. Yields the base URL."""

    async def good(request: web.Request) -> web.Response:
        return web.json_response({"access_token": ACCESS_TOKEN, "expires_in": 3600})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "server_error"}, status=500)

    app = web.Application()
    app.router.add_post("/good", good)
    app.router.add_post("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _pem_core(pem: str) -> str:
    """The base64 of a PEM key without its armour lines (how it could leak re-wrapped)."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


async def test_no_option_secret_in_reads_logs_metrics_or_plaintext_rows(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey, tmp_path: Path
) -> None:
    """Every secret member is used for real, then looked for everywhere it must not be."""
    await ensure_mirror_topics(settings, [TOPIC])
    tls = MutualTLS.make(tmp_path)
    client_cert, client_key = tls.clients.issue()
    env = settings_env(settings.replace(metrics_webhook_labels=True, log_level="DEBUG"))
    port = free_port()
    env |= {"HOOKLANE_API_PORT": str(port), "SSL_CERT_FILE": str(tls.server.ca)}
    base = f"http://127.0.0.1:{port}"
    bodies: list[bytes] = []
    metrics: list[str] = []
    (logs := tmp_path / "logs").mkdir()
    async with (
        Receiver() as rx,
        mtls_receiver(tls) as mtls,
        token_endpoints() as tokens,
        services(env, logs) as metrics_ports,
        aiohttp.ClientSession(headers=tenant.headers) as http,
    ):
        await wait_until(lambda: _api_up(http, base), 60, message="the API")

        async def call(method: str, path: str, body: Any = None) -> dict[str, Any]:
            async with http.request(method, base + path, json=body) as response:
                assert response.status < 300, await response.text()
                bodies.append(await response.read())
                return dict(await response.json())

        hooks = {
            "v1a-basic": {
                "url": rx.url_for("v1a"),
                "signature_scheme": "v1a",
                "auth": {"type": "basic", "username": "hooklane", "password": PASSWORD},
                "headers": {"X-Env": "test"},
            },
            "mtls-bearer": {
                "url": mtls.url,
                "tls_client_certificate": {"certificate": client_cert, "private_key": client_key},
                "auth": {"type": "bearer", "token": BEARER},
            },
            "oauth": {
                "url": rx.url_for("oauth"),
                "auth": {
                    "type": "oauth2_client_credentials",
                    "token_url": f"{tokens}/good",
                    "client_id": "hooklane",
                    "client_secret": CLIENT_SECRET,
                },
            },
            "oauth-broken": {
                "url": rx.url_for("broken"),
                "auth": {
                    "type": "oauth2_client_credentials",
                    "token_url": f"{tokens}/broken",
                    "client_id": "hooklane",
                    "client_secret": BROKEN_SECRET,
                },
            },
        }
        ids = {}
        for name, body in hooks.items():
            ids[name] = (await call("POST", "/webhooks", {"topics": [TOPIC], **body}))["id"]
        await call("POST", f"/webhooks/{ids['v1a-basic']}", {"rotate_signing_key": True})
        for webhook_id in ids.values():
            await call("POST", f"/webhooks/test/trigger/{webhook_id}")
        await call("POST", "/events", {"topic": TOPIC, "data": {"registration_id": "reg_1"}})
        await wait_until(
            lambda: len(rx.on("v1a")) == 2 and len(rx.on("oauth")) == 2 and len(mtls.requests) == 2,
            60,
            message="every working webhook's test and event deliveries",
        )
        await asyncio.sleep(1)  # the broken one retries (and logs) meanwhile
        await call("GET", "/webhooks")
        for webhook_id in ids.values():
            await call("GET", f"/webhooks/{webhook_id}")
            await call("GET", f"/webhooks/{webhook_id}/attempts")
        for metrics_port in metrics_ports:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                if response.status == 200:
                    metrics.append(await response.text())

    # The secrets were really used.
    assert rx.on("oauth")[-1].headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert mtls.requests[-1].headers["Authorization"] == f"Bearer {BEARER}"
    assert metrics, "no /metrics answered"
    box = SecretBox.from_setting(settings.secret_key)
    rows = await pool.fetch(
        "SELECT secret_ciphertext, previous_secret_ciphertext FROM webhooks WHERE id = $1::uuid",
        ids["v1a-basic"],
    )
    private_keys = [box.decrypt(c) for c in rows[0].values() if c is not None]
    assert len(private_keys) == 2 and all(k.startswith("whsk_") for k in private_keys)

    needles = [PASSWORD, BEARER, CLIENT_SECRET, ACCESS_TOKEN, BROKEN_SECRET, _pem_core(client_key)]
    needles += [form for key in private_keys for form in (key, key.removeprefix("whsk_"))]
    logs_by_name = read_logs(logs)
    assert "webhook.created" in logs_by_name["api.log"]  # the capture works
    assert "/broken answered HTTP 500" in logs_by_name["deliverer.log"]  # the failure logged
    stored = await pool.fetch(
        "SELECT w::text AS row FROM webhooks w WHERE tenant_id = $1", tenant.id
    )
    attempts = await pool.fetch(
        "SELECT a::text AS row FROM attempts a WHERE tenant_id = $1", tenant.id
    )
    for needle in needles:
        for name, text in logs_by_name.items():
            assert needle not in text, f"{name} contains a secret"
        for answer in bodies:
            assert needle.encode() not in answer, "an API response holds a secret"
        for text in metrics:
            assert needle not in text, "a metric holds a secret"
        for record in [*stored, *attempts]:
            assert needle not in record["row"], "a row holds a secret in plaintext"


pytestmark = pytest.mark.timeout(180)
