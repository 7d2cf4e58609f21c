"""Scenario ``options``: what each delivery option (DESIGN.md §11) costs per delivery.

In-process micro-benchmarks, no broker or database:

- ``attempt_us_*``: CPU µs of one ``attempt_delivery`` (body, signing, headers,
  result) against a sender that answers 200 at once, for a plain ``v1`` webhook, one
  with 5 custom headers, a ``v1a`` one, and a ``v1a`` one in its rotation overlap (two
  signatures); ``*_extra_us`` is the difference to plain ``v1``.
- ``keepalive_us_*``: wall µs per request of the lean sender to a loopback HTTPS
  receiver over kept-alive connections, without and with a client certificate (both
  verify the server; the receiver asks for a certificate but does not require one).
- ``handshake_us_*``: the same with a new connection per request (``Connection:
  close``: a TLS handshake each), where the client certificate's signature is paid.

``python -m dispatcher.bench.options_cost`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from dispatcher.bench.certificates import self_signed
from dispatcher.bench.results import ScenarioResult
from dispatcher.bench.workload import event_data, pad_for
from dispatcher.delivery.asymmetric import generate_key_pair
from dispatcher.delivery.attempt import WebhookTarget, attempt_delivery
from dispatcher.delivery.client_certificate import ClientCertificate, check_client_certificate
from dispatcher.delivery.http.lean import HttpSender
from dispatcher.delivery.http.sender import Response
from dispatcher.delivery.secrets import generate_secret
from dispatcher.messages.wire import DeliveryTask, Event
from dispatcher.settings import Settings

ATTEMPTS = 20_000
REQUESTS = 2_000
HANDSHAKES = 300
HEADERS = {f"X-Gateway-{n}": f"value-{n}-" + "x" * 24 for n in range(5)}


class _Answering:
    """A sender that answers 200 without I/O: what is left is the attempt's own work."""

    ok = Response(200)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        return self.ok


async def _attempt_us(target: WebhookTarget, task: DeliveryTask, rounds: int) -> float:
    sender = _Answering()
    for _ in range(rounds // 10):  # warm caches (keyed HMACs, parsed keys)
        await attempt_delivery(sender, target, task, 1)
    started = time.process_time()
    for _ in range(rounds):
        await attempt_delivery(sender, target, task, 1)
    return round((time.process_time() - started) / rounds * 1e6, 2)


async def attempt_costs(rounds: int = ATTEMPTS) -> dict[str, float]:
    """CPU µs per attempt for each signing/header variant, and the extras over plain v1."""
    event = Event(
        str(uuid.uuid4()), "BENCH", "ten_bench", int(time.time()), event_data(0, pad_for())
    )
    task = DeliveryTask("w", event)
    secret, (new_key, _), (old_key, _) = generate_secret(), generate_key_pair(), generate_key_pair()
    url = "http://127.0.0.1:9/hook"
    variants = {
        "v1": WebhookTarget("w", "t", url, (secret,)),
        "v1_headers": WebhookTarget("w", "t", url, (secret,), headers=tuple(HEADERS.items())),
        "v1a": WebhookTarget("w", "t", url, (new_key,), asymmetric=True),
        "v1a_rotating": WebhookTarget("w", "t", url, (new_key, old_key), asymmetric=True),
    }
    figures = {
        f"attempt_us_{name}": await _attempt_us(t, task, rounds) for name, t in variants.items()
    }
    for name in ("v1_headers", "v1a", "v1a_rotating"):
        extra = figures[f"attempt_us_{name}"] - figures["attempt_us_v1"]
        figures[f"{name}_extra_us"] = round(extra, 2)
    return figures


async def _interleaved(
    sender: HttpSender, url: str, count: int, certificate: ClientCertificate, fresh: bool
) -> tuple[float, float]:
    """Wall µs per request without and with ``certificate``, in alternating batches so
    drift on a shared machine falls on both alike; ``fresh``: a new connection each."""
    body = b'{"bench": true}'
    headers = {"Connection": "close"} if fresh else {}
    spent = {False: 0.0, True: 0.0}
    for presented in (False, True):  # warm: pools, contexts, DNS
        await sender.send(url, body, headers, certificate if presented else None)
    batch = max(1, count // 20)
    for _ in range(count // batch):
        for presented in (False, True):
            started = time.perf_counter()
            for _ in range(batch):
                response = await sender.send(url, body, headers, certificate if presented else None)
                assert response.ok
            spent[presented] += time.perf_counter() - started
    done = count // batch * batch
    return round(spent[False] / done * 1e6, 1), round(spent[True] / done * 1e6, 1)


async def tls_costs(requests: int = REQUESTS, handshakes: int = HANDSHAKES) -> dict[str, float]:
    """Wall µs per HTTPS request with and without a client certificate, kept alive and not."""
    server_cert, server_key = self_signed("bench receiver", loopback=True)
    client_cert, client_key = self_signed("bench sender")
    certificate = check_client_certificate(
        client_cert, client_key, datetime.datetime.now(datetime.UTC)
    )
    with tempfile.TemporaryDirectory() as folder:
        pair = Path(folder) / "server.pem"
        pair.write_text(server_cert + server_key)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(pair)
    server_context.verify_mode = ssl.CERT_OPTIONAL
    server_context.load_verify_locations(cadata=client_cert)

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/hook"
    settings = Settings(allow_private_targets=True)

    def trust() -> ssl.SSLContext:
        return ssl.create_default_context(cadata=server_cert)

    figures: dict[str, float] = {}
    try:
        for fresh, count, prefix in (
            (False, requests, "keepalive"),
            (True, handshakes, "handshake"),
        ):
            sender = HttpSender(settings, tls_factory=trust)
            try:
                plain, presented = await _interleaved(sender, url, count, certificate, fresh)
            finally:
                await sender.close()
            figures[f"{prefix}_us_plain"] = plain
            figures[f"{prefix}_us_client_cert"] = presented
            figures[f"{prefix}_client_cert_extra_us"] = round(presented - plain, 1)
    finally:
        await runner.cleanup()
    return figures


async def run_options(quick: bool = False) -> ScenarioResult:
    """The ``options`` scenario's figures."""
    scale = 10 if quick else 1
    params = {
        "attempts": ATTEMPTS // scale,
        "requests": REQUESTS // scale,
        "handshakes": HANDSHAKES // scale,
        "custom_headers": len(HEADERS),
    }
    metrics: dict[str, Any] = await attempt_costs(params["attempts"])
    metrics |= await tls_costs(params["requests"], params["handshakes"])
    return ScenarioResult("options", params=params, metrics=metrics)


if __name__ == "__main__":
    result = asyncio.run(run_options())
    print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
