"""Hooklane against a secured Apache Kafka (issue 23, DESIGN §10).

One broker for the module, with a listener per way of connecting, all its certificates
from a throwaway CA made here (trustme):

- ``SCRAM``  SASL_SSL, SCRAM-SHA-512 (the user added when the storage is formatted)
- ``PLAIN``  SASL_PLAINTEXT, PLAIN
- ``MTLS``   SSL, client certificate required
- ``OAUTH``  SASL_SSL, OAUTHBEARER (the broker's unsecured JWT validator; the tokens come
  from a loopback ``client_credentials`` endpoint)
- ``WRONGHOST`` SSL with a certificate for another host name
- ``REAUTH`` SASL_PLAINTEXT, SCRAM-SHA-512, sessions of 3 s (``connections.max.reauth.ms``)

The pipeline (``hooklane publish`` → router → deliverer → loopback receiver) runs over
each; failures (wrong password, unknown CA, host name mismatch) are named.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import trustme
from aiohttp import web
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from cryptography.hazmat.primitives import serialization

from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.kafka.broker import free_port
from dispatcher.kafka.connection import client_options
from dispatcher.kafka.kraft_node import Listener
from dispatcher.kafka.producer import Producer
from dispatcher.kafka.topic_admin import create_topics
from dispatcher.ops.readiness import BrokerCheck, NotReady
from dispatcher.settings import Settings
from tests.conftest import TEST_SECRET_KEY, TenantKey, on_kafka
from tests.support.api import api_client
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    settings_env,
    start_deliverer,
    start_router,
    wait_for_every_event,
    wait_until,
)
from tests.support.receiver import Receiver
from tests.test_cli import hooklane

SCRAM_USER, SCRAM_PASSWORD = "hooklane", "scram-Secret-1"
PLAIN_USER, PLAIN_PASSWORD = "hooklane", "plain-Secret-2"
OAUTH_CLIENT, OAUTH_SECRET = "hooklane-client", "oauth-Secret-3"
REAUTH_MS = 3000
TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"  # a topic of the seeded catalog


@dataclass
class TokenEndpoint:
    """A loopback OAuth 2.0 token endpoint (client_credentials) issuing unsecured JWTs."""

    port: int = 0
    issued: int = 0
    refused: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/token"

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        basic = base64.b64encode(f"{OAUTH_CLIENT}:{OAUTH_SECRET}".encode()).decode()
        if (
            request.headers.get("Authorization") != f"Basic {basic}"
            or form.get("grant_type") != "client_credentials"
        ):
            self.refused += 1
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued += 1
        now = int(time.time())
        claims = {"sub": OAUTH_CLIENT, "iat": now, "exp": now + 3600, "scope": "kafka"}
        token = ".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
            for part in ({"alg": "none"}, claims)
        )
        return web.json_response(
            {"access_token": token + ".", "token_type": "Bearer", "expires_in": 3600}
        )


@dataclass
class Secured:
    """The broker, the files clients need and the token endpoint."""

    broker: ApacheKafkaBroker
    ca: str
    client_cert: str
    client_key: str
    other_ca: str
    tokens: TokenEndpoint = field(default_factory=TokenEndpoint)
    authority: trustme.CA | None = None  # the CA that signed the broker's certificates


def keystore(cert: trustme.LeafCert, path: Path) -> str:
    """A PEM keystore for Kafka: the PKCS#8 key (what its PEM loader reads), then the chain."""
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pkcs8 + b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    return str(path)


def listener_properties(name: str, keystore_path: str, ca: str) -> dict[str, str]:
    prefix = f"listener.name.{name.lower()}."
    return {
        prefix + "ssl.keystore.type": "PEM",
        prefix + "ssl.keystore.location": keystore_path,
        prefix + "ssl.truststore.type": "PEM",
        prefix + "ssl.truststore.location": ca,
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if not on_kafka():
        pytest.skip("secured listeners are tested on Apache Kafka (HOOKLANE_TEST_BROKER)")
    with secured_broker(tmp_path_factory.mktemp("tls")) as started:
        yield started


@contextlib.contextmanager
def secured_broker(directory: Path) -> Iterator[Secured]:
    """The broker with every listener, its CA and client files in ``directory``."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(directory / "other-ca.pem"))
    server = keystore(ca.issue_cert("127.0.0.1", "localhost"), directory / "server.pem")
    wrong = keystore(ca.issue_cert("kafka.invalid"), directory / "wrong-host.pem")
    client = ca.issue_cert("hooklane-client")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    ca_file = str(directory / "ca.pem")

    properties = {
        "listener.name.scram.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.scram.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.plain.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.plain.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required"
            f' user_{PLAIN_USER}="{PLAIN_PASSWORD}";'
        ),
        "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.oauth.oauthbearer.sasl.jaas.config": (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required"
            ' unsecuredLoginStringClaim_sub="broker";'
        ),
        "listener.name.mtls.ssl.client.auth": "required",
        # SASL sessions of 3 s: the broker closes a connection whose session ended
        # (aiokafka does not re-authenticate, KIP-368) and the client reconnects
        "listener.name.reauth.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.reauth.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.reauth.scram-sha-512.connections.max.reauth.ms": str(REAUTH_MS),
    }
    for name in ("SCRAM", "MTLS", "OAUTH"):
        properties |= listener_properties(name, server, ca_file)
    properties |= listener_properties("WRONGHOST", wrong, ca_file)
    broker = ApacheKafkaBroker(
        listeners=[
            Listener("SCRAM", "SASL_SSL"),
            Listener("PLAIN", "SASL_PLAINTEXT"),
            Listener("MTLS", "SSL"),
            Listener("OAUTH", "SASL_SSL"),
            Listener("WRONGHOST", "SSL"),
            Listener("REAUTH", "SASL_PLAINTEXT"),
        ],
        properties=properties,
        format_args=["--add-scram", f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"],
    )
    with broker:
        yield Secured(
            broker,
            ca_file,
            str(directory / "client.pem"),
            str(directory / "client.key"),
            str(directory / "other-ca.pem"),
            authority=ca,
        )


@pytest.fixture
async def token_endpoint(secured: Secured) -> AsyncIterator[TokenEndpoint]:
    async with serving(secured.tokens) as endpoint:
        yield endpoint


@contextlib.asynccontextmanager
async def serving(endpoint: TokenEndpoint) -> AsyncIterator[TokenEndpoint]:
    """``endpoint`` answering on a free loopback port meanwhile."""
    app = web.Application()
    app.router.add_post("/oauth2/token", endpoint.token)
    endpoint.runner = web.AppRunner(app, access_log=None)
    await endpoint.runner.setup()
    endpoint.port = free_port()
    await web.TCPSite(endpoint.runner, "127.0.0.1", endpoint.port).start()
    try:
        yield endpoint
    finally:
        await endpoint.runner.cleanup()


def connection(secured: Secured, kind: str, **overrides: Any) -> dict[str, Any]:
    """The Settings fields that connect to listener ``kind`` the way it expects."""
    b = secured.broker
    values: dict[str, Any] = {
        "scram": {
            "kafka_bootstrap_servers": b.bootstrap("SCRAM"),
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": SCRAM_USER,
            "kafka_sasl_password": SCRAM_PASSWORD,
            "kafka_ssl_cafile": secured.ca,
        },
        "reauth": {
            "kafka_bootstrap_servers": b.bootstrap("REAUTH"),
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": SCRAM_USER,
            "kafka_sasl_password": SCRAM_PASSWORD,
        },
        "plain": {
            "kafka_bootstrap_servers": b.bootstrap("PLAIN"),
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": PLAIN_USER,
            "kafka_sasl_password": PLAIN_PASSWORD,
        },
        "mtls": {
            "kafka_bootstrap_servers": b.bootstrap("MTLS"),
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": secured.ca,
            "kafka_ssl_certfile": secured.client_cert,
            "kafka_ssl_keyfile": secured.client_key,
        },
        "oauth": {
            "kafka_bootstrap_servers": b.bootstrap("OAUTH"),
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "OAUTHBEARER",
            "kafka_ssl_cafile": secured.ca,
            "kafka_oauth_token_provider": "client_credentials",
            "kafka_oauth_token_url": secured.tokens.url,
            "kafka_oauth_client_id": OAUTH_CLIENT,
            "kafka_oauth_client_secret": OAUTH_SECRET,
            "kafka_oauth_scope": "kafka",
        },
    }[kind]
    return values | overrides


def secured_settings(database_url: str, **fields: Any) -> Settings:
    defaults: dict[str, Any] = {
        "database_url": database_url,
        "topic_prefix": f"s{uuid.uuid4().hex[:8]}.",
        "allow_private_targets": True,
        "secret_key": TEST_SECRET_KEY,
        "delivery_timeout_s": 5.0,
        "retry_schedule": (0.05, 0.1, 0.2, 0.4, 0.8, 1.0),
        "deliveries_partitions": 2,
        "topic_partitions": 2,
        "kafka_replication_factor": 1,
        "log_format": "console",
        "log_level": "WARNING",
        "validate_events": False,
        "metrics_port": free_port(),
    }
    return Settings(**(defaults | fields))


# The first test also waits for the module's broker (48 s at a load of 25 on 2 cores) and
# each `hooklane` command is a Python start (16 s each there): 120 s timed out.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["scram", "plain", "mtls", "oauth"])
async def test_the_pipeline_runs_over_each_secured_listener(
    kind: str,
    secured: Secured,
    token_endpoint: TokenEndpoint,
    database_url: str,
    pool: asyncpg.Pool,
    tenant: TenantKey,
) -> None:
    """`hooklane publish` and `POST /events` → router → deliverer → receiver, every
    client secured alike; `hooklane status` reads the groups' lag the same way."""
    settings = secured_settings(database_url, **connection(secured, kind))
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        await ensure_mirror_topics(settings, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        try:
            async with api_client(settings) as api:  # its producer connects the same way
                events = [await publish(settings, tenant, 0)]
                response = await api.post("/events", json=event(1), headers=tenant.headers)
                assert response.status == 202, await response.text()
                events.append((await response.json())["id"])
                events.append(await publish(settings, tenant, 2))
            await wait_for_every_event(rx, ["hook"], events, within=60)
            assert [r.json()["data"]["n"] for r in rx.on("hook")] == [0, 1, 2]
            code, out, err = await hooklane(settings, "status", "--json")
            assert code == 0, err
            assert json.loads(out)["groups"], out
        finally:
            await deliverer.stop()
            await router.stop()
    if kind == "oauth":
        assert token_endpoint.issued >= 1
        assert token_endpoint.refused == 0


def event(n: int) -> dict[str, Any]:
    """A POST /events body of the test topic (schema-valid data)."""
    return {"topic": TOPIC, "data": {"registration_id": f"r{n}", "n": n}}


async def publish(
    settings: Settings, tenant: TenantKey, n: int, secrets: tuple[str, ...] = ()
) -> str:
    """`hooklane publish` of event ``n``: its id (no ``secrets`` in what it wrote)."""
    data = json.dumps(event(n)["data"])
    code, out, err = await hooklane(
        settings, "publish", TOPIC, "--tenant", tenant.id, "--data", data
    )
    assert code == 0, err
    assert not [secret for secret in secrets if secret in out + err]
    return out.strip()


FAILURES = [
    (
        "wrong password",
        "scram",
        {"kafka_sasl_password": "not-the-password"},
        "authentication failed (SCRAM-SHA-512 as hooklane)",
    ),
    (
        "unknown CA",
        "scram",
        {"kafka_ssl_cafile": "{other_ca}"},
        "certificate verify failed: unable to get local issuer certificate",
    ),
    (
        "host name mismatch",
        "mtls",
        {"kafka_bootstrap_servers": "{wronghost}"},
        "IP address mismatch",
    ),
    (
        "no client certificate",
        "mtls",
        {"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None},
        "TLS",
    ),
]


@pytest.mark.parametrize(("case", "kind", "overrides", "cause"), FAILURES)
async def test_readiness_names_the_broker_and_what_is_wrong(
    case: str,
    kind: str,
    overrides: dict[str, str | None],
    cause: str,
    secured: Secured,
    database_url: str,
) -> None:
    """A refused connection: the broker check fails with one line naming the broker and
    the cause (never the password), and passes again once the connection is right."""
    places = {"other_ca": secured.other_ca, "wronghost": secured.broker.bootstrap("WRONGHOST")}
    wrong = {k: v.format(**places) if v else v for k, v in overrides.items()}
    settings = secured_settings(database_url, **connection(secured, kind, **wrong))
    check = BrokerCheck(settings, timeout_s=10.0, cache_s=0)
    try:
        with pytest.raises(NotReady) as failed:
            await check()
        message = str(failed.value)
        assert message.startswith(f"kafka broker {settings.kafka_bootstrap_servers}: "), message
        assert cause in message, (case, message)
        assert "\n" not in message
        assert "not-the-password" not in message
        assert SCRAM_PASSWORD not in message
    finally:
        await check.close()
    right = BrokerCheck(settings.replace(**connection(secured, kind)), cache_s=0)
    try:
        await right()
    finally:
        await right.close()


@dataclass
class Process:
    """A router or deliverer subprocess and every line it wrote to stderr."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    async def read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode(errors="replace"))

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found


async def run_process(module: str, settings: Settings) -> tuple[Process, asyncio.Task[None]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=settings_env(settings),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Process(process)
    return running, asyncio.create_task(running.read())


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, await response.json()


@pytest.mark.timeout(300)  # two processes at DEBUG wait out a refusal and recover
async def test_bad_credentials_keep_the_processes_up_saying_why_and_they_recover(
    secured: Secured, database_url: str, pool: asyncpg.Pool, tenant: TenantKey, tmp_path: Path
) -> None:
    """Router and deliverer at DEBUG with a wrong password (a mounted password file):
    they stay up, /readyz answers 503 naming the broker and the cause, one log line says
    it; the file is corrected (a rotated Secret) and, without a restart, events flow.
    No secret appears in any line they or `hooklane publish` wrote."""
    password_file = tmp_path / "kafka-password"
    password_file.write_text("wrong-Secret-9\n")
    base = secured_settings(
        database_url,
        **connection(secured, "scram", kafka_sasl_password=None),
        kafka_sasl_password_file=str(password_file),
        log_level="DEBUG",
    )
    await create_topics(
        base.replace(kafka_sasl_password_file=None, kafka_sasl_password=SCRAM_PASSWORD), [TOPIC]
    )
    async with Receiver() as rx:
        await create_webhook(pool, base, tenant.id, rx.url, [TOPIC])
        ports = {"dispatcher.router": free_port(), "dispatcher.deliverer": free_port()}
        spawned = [
            await run_process(module, base.replace(metrics_port=port))
            for module, port in ports.items()
        ]
        try:
            for port in ports.values():
                await wait_until(functools.partial(_answers, port), within=60, message="/readyz")
                status, body = await readyz(port)
                assert status == 503, body
                error = body["checks"]["kafka"]["error"]
                assert error.startswith(f"kafka broker {base.kafka_bootstrap_servers}: "), error
                assert "authentication failed" in error
            for process, _ in spawned:
                await wait_until(
                    functools.partial(_refused, process),
                    within=30,
                    message="kafka.refused",
                )
            password_file.write_text(SCRAM_PASSWORD + "\n")  # the Secret is corrected
            for port in ports.values():
                await wait_until(functools.partial(_ready, port), within=90, message="/readyz 200")
            right = base.replace(log_level="DEBUG")
            events = [await publish(right, tenant, n, (SCRAM_PASSWORD,)) for n in range(2)]
            await wait_for_every_event(rx, ["hook"], events, within=60)
        finally:
            for process, reader in spawned:
                with contextlib.suppress(ProcessLookupError):
                    process.process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.process.wait(), 30)
                await reader
    for process, _ in spawned:
        # one line for the cause while it lasted (retries are not logged again)
        assert len(process.events("kafka.refused")) == 1, process.events("kafka.refused")
        assert process.events("kafka.accepted")
        text = "".join(process.lines)
        assert any(
            '"level": "debug"' in line or '"level":"debug"' in line for line in process.lines
        )
        for secret in (SCRAM_PASSWORD, "wrong-Secret-9"):
            assert secret not in text


def _refused(process: Process) -> bool:
    return bool(process.events("kafka.refused"))


async def _answers(port: int) -> bool:
    try:
        await readyz(port)
    except aiohttp.ClientError:
        return False
    return True


async def _ready(port: int) -> bool:
    try:
        status, _ = await readyz(port)
    except aiohttp.ClientError:
        return False
    return status == 200


@pytest.mark.timeout(240)
async def test_deliveries_ride_through_sasl_session_expiry(
    secured: Secured, database_url: str, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """Sessions of 3 s end many times while events flow for ~12 s: the broker closes each
    expired connection, the clients reconnect, and every event arrives, in order."""
    settings = secured_settings(database_url, **connection(secured, "reauth"))
    assert await session_ends(settings), "the broker kept an expired SASL session open"
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])  # ordered, 1 in flight
        await ensure_mirror_topics(settings, [TOPIC])
        router = await start_router(settings)
        deliverer = await start_deliverer(settings)
        try:
            published = []
            async with Producer(settings) as producer:
                for n in range(40):
                    published.append(await producer.publish(TOPIC, {"n": n}, tenant_id=tenant.id))
                    await asyncio.sleep(0.3)  # 12 s: four sessions' worth
            await wait_for_every_event(rx, ["hook"], published, within=90)
        finally:
            await deliverer.stop()
            await router.stop()
    arrived = rx.event_ids("hook")
    first_seen = list(dict.fromkeys(arrived))
    assert first_seen == published  # nothing lost, nothing reordered


async def session_ends(settings: Settings) -> bool:
    """Whether the broker drops a connection used after its SASL session expired."""
    options = client_options(settings)
    host, port = options.pop("bootstrap_servers").rsplit(":", 1)
    conn = await create_conn(host, int(port), **options)
    try:
        await conn.send(MetadataRequest([]))
        await asyncio.sleep(REAUTH_MS / 1000 + 1.0)
        try:
            await conn.send(MetadataRequest([]))
        except KafkaError:
            return True
        return not conn.connected()
    finally:
        conn.close()


async def test_the_cli_names_the_cause_of_a_refused_connection(
    secured: Secured, database_url: str
) -> None:
    """`hooklane status` with a wrong password ends with one line naming the broker and
    the cause (not aiokafka's bare "Unable to bootstrap")."""
    settings = secured_settings(
        database_url, **connection(secured, "scram", kafka_sasl_password="not-the-password")
    )
    code, out, err = await hooklane(settings, "status")
    assert code == 1
    # aiokafka's own log line may come first; the command's answer is the last line
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"hooklane status: kafka broker {settings.kafka_bootstrap_servers}:")
    assert "authentication failed" in line
    assert "not-the-password" not in out + err
