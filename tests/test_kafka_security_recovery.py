"""Secured Apache Kafka, the processes as an operator runs them (issue 23, DESIGN §10).

``hooklane api``, ``router`` and ``deliverer`` run as subprocesses at DEBUG, every line
they write kept:

- a SCRAM-SHA-512 user whose password the broker does not accept: each process stays
  up, says why once, answers ``/readyz`` 503 in its ``kafka`` check, and ``POST
  /events`` answers 503 storing nothing; the credential is then changed ON THE BROKER
  (AlterUserScramCredentials) and, without a restart, events published through the API
  and ``hooklane publish`` are delivered, and the lag gauge reads the secured broker;
- the API started while the broker refuses its certificate checks (unknown CA, host
  name mismatch) serves, says why, and connects once the CA file is corrected;
- full runs with an OAuth client secret and a client key password: no secret in any
  line of any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka.conn import create_conn
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.kafka.apache import ApacheKafkaBroker
from dispatcher.kafka.broker import free_port
from dispatcher.kafka.topic_admin import create_topics
from dispatcher.settings import Settings
from tests.conftest import TenantKey, on_kafka
from tests.support.pipeline import create_webhook, settings_env, wait_until
from tests.support.pipeline import wait_for_every_event as wait_for_events
from tests.support.receiver import Receiver
from tests.test_kafka_security import (
    OAUTH_SECRET,
    SCRAM_PASSWORD,
    SCRAM_USER,
    TOPIC,
    Secured,
    connection,
    event,
    publish,
    secured_broker,
    secured_settings,
    serving,
)

BROKER_SIDE = "broker-Secret-Y7"  # the user's credential on the broker at first
CLIENT_SIDE = "client-Secret-X4"  # what the processes are configured with
KEY_PASSWORD = "key-Secret-K5"  # the client key's passphrase
SCRAM_SHA_512 = 2  # the mechanism's id in AlterUserScramCredentials
ITERATIONS = 4096  # the least Kafka accepts for SCRAM
SECRETS = (BROKER_SIDE, CLIENT_SIDE, SCRAM_PASSWORD)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if not on_kafka():
        pytest.skip("secured listeners are tested on Apache Kafka (HOOKLANE_TEST_BROKER)")
    with secured_broker(tmp_path_factory.mktemp("tls")) as started:
        yield started


# -- a SCRAM credential changed on the broker --------------------------------------------


class AlterUserScramCredentialsResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user_name", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentials(Request[AlterUserScramCredentialsRequest_v0]):  # type: ignore[misc]
    """KIP-554's request, which aiokafka's admin client lacks (and the pinned jars have no
    kafka-configs tool): upsert one user's SCRAM-SHA-512 credential."""

    API_KEY = 51

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password

    def build(
        self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
    ) -> AlterUserScramCredentialsRequest_v0:
        salt = os.urandom(32)
        # RFC 5802 SaltedPassword = Hi(password, salt, i): PBKDF2 with HMAC-SHA-512
        salted = hashlib.pbkdf2_hmac("sha512", self._password.encode(), salt, ITERATIONS)
        upsertion: tuple[Any, ...] = (self._user, SCRAM_SHA_512, ITERATIONS, salt, salted, {})
        return request_struct_class([], [upsertion], {})


async def set_scram_password(broker: ApacheKafkaBroker, user: str, password: str) -> None:
    """Create or change ``user``'s SCRAM-SHA-512 credential on the broker (through its
    PLAINTEXT listener, the operator's side)."""
    conn = await create_conn(broker.host, broker.port)
    try:
        response = await conn.send(AlterUserScramCredentials(user, password))
    finally:
        conn.close()
    [(name, error_code, error_message, _)] = response.results
    assert (name, error_code) == (user, 0), error_message


# -- the processes ---------------------------------------------------------------------


@dataclass
class Service:
    """A process of ``python -m <module>`` and every line it wrote (stdout and stderr)."""

    name: str
    process: asyncio.subprocess.Process
    ops_port: int
    lines: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode(errors="replace"))

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                event = orjson.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    async def readyz(self) -> tuple[int, dict[str, Any]] | None:
        """``/readyz``'s status and body, or None while nothing answers."""
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.ops_port}/readyz") as response,
            ):
                return response.status, await response.json()
        except aiohttp.ClientError:
            return None

    async def answers(self) -> bool:
        return await self.readyz() is not None

    async def ready(self) -> bool:
        answer = await self.readyz()
        return answer is not None and answer[0] == 200

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await asyncio.gather(*self.readers)


async def start_service(name: str, module: str, settings: Settings, api_port: int) -> Service:
    ops_port = free_port()
    env = settings_env(settings.replace(metrics_port=ops_port)) | {
        "HOOKLANE_API_HOST": "127.0.0.1",
        "HOOKLANE_API_PORT": str(api_port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    service = Service(name, process, ops_port)
    assert process.stdout is not None and process.stderr is not None
    service.readers = [
        asyncio.create_task(service._read(stream)) for stream in (process.stdout, process.stderr)
    ]
    return service


MODULES = {"api": "api", "router": "dispatcher.router", "deliverer": "dispatcher.deliverer"}


@dataclass
class Stack:
    services: dict[str, Service]
    api_url: str

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services.values())


@contextlib.asynccontextmanager
async def running(
    settings: Settings, names: tuple[str, ...] = tuple(MODULES)
) -> AsyncIterator[Stack]:
    """The named processes with ``settings``, stopped (SIGTERM) at the end."""
    api_port = free_port()
    services: dict[str, Service] = {}
    try:
        for name in names:
            services[name] = await start_service(name, MODULES[name], settings, api_port)
        yield Stack(services, f"http://127.0.0.1:{api_port}")
    finally:
        for service in services.values():
            await service.stop()


async def post_event(
    stack: Stack, tenant: TenantKey, n: int, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = tenant.headers | ({"Idempotency-Key": key} if key else {})
    body = event(n)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.api_url}/events", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def api_answers(stack: Stack) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{stack.api_url}/healthz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def wait_refused(service: Service, bootstrap: str, cause: str) -> None:
    """``service`` is up, ``/readyz`` answers 503 with ``cause`` in its ``kafka`` check,
    and its log said why."""
    await wait_until(service.answers, within=60, message=f"{service.name} /readyz")
    answer = await service.readyz()
    assert answer is not None
    status, body = answer
    assert status == 503, body
    error = body["checks"]["kafka"]["error"]
    assert error.startswith(f"kafka broker {bootstrap}: "), error
    assert cause in error, error
    await wait_until(
        lambda: bool(service.events("kafka.refused")), within=60, message="kafka.refused"
    )


def assert_clean(stack: Stack, secrets: tuple[str, ...]) -> None:
    """No line of any process carries a secret; router and deliverer did log at DEBUG
    (the API has no DEBUG events of its own; libraries log from WARNING up)."""
    for service in stack:
        if service.name != "api":
            assert any('"level":"debug"' in line for line in service.lines), service.name
        assert service.lines, service.name
        for line in service.lines:
            for secret in secrets:
                assert secret not in line, (service.name, line)


# -- the tests --------------------------------------------------------------------------


@pytest.mark.timeout(360)  # three processes at DEBUG wait out a refusal and recover
async def test_a_credential_changed_on_the_broker_lets_every_process_in_without_restart(
    secured: Secured, database_url: str, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    user = f"rotating-{uuid.uuid4().hex[:6]}"
    await set_scram_password(secured.broker, user, BROKER_SIDE)
    settings = secured_settings(
        database_url,
        **connection(secured, "scram", kafka_sasl_username=user, kafka_sasl_password=CLIENT_SIDE),
        log_level="DEBUG",
    )
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap is not None
    admin = settings.replace(kafka_sasl_username=SCRAM_USER, kafka_sasl_password=SCRAM_PASSWORD)
    await create_topics(admin, [TOPIC])
    key = f"evt-{uuid.uuid4().hex[:8]}"
    async with Receiver() as rx:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        async with running(settings) as stack:
            await wait_until(lambda: api_answers(stack), within=60, message="the API serves")
            for service in stack:
                await wait_refused(
                    service, bootstrap, f"authentication failed (SCRAM-SHA-512 as {user})"
                )
            status, body = await post_event(stack, tenant, 0, key=key)
            assert status == 503, body
            assert body["error"]["code"] == "unavailable", body
            pids = {service.name: service.process.pid for service in stack}

            await set_scram_password(secured.broker, user, CLIENT_SIDE)  # on the broker
            for service in stack:
                await wait_until(service.ready, within=90, message=f"{service.name} ready")
            assert {s.name: s.process.pid for s in stack if s.process.returncode is None} == pids

            published = []
            status, body = await post_event(stack, tenant, 0, key=key)
            # 202, not 200: the refused call claimed nothing
            assert (status, body) == (202, {"id": key})
            published.append(key)
            status, body = await post_event(stack, tenant, 1)
            assert status == 202, body
            published.append(body["id"])
            published.append(await publish(settings, tenant, 2, SECRETS))
            await wait_for_events(rx, ["hook"], published, within=60)
            assert list(dict.fromkeys(rx.event_ids("hook"))) == published

            # the lag gauge reads the secured broker: every partition, caught up
            mirror = settings.mirror_topic(TOPIC)
            router = stack.services["router"]
            await wait_until(
                lambda: caught_up(router, mirror, settings.topic_partitions),
                within=60,
                message="hooklane_consumer_lag of the router's partitions",
            )
            deliverer = stack.services["deliverer"]
            await wait_until(
                lambda: caught_up(
                    deliverer, settings.deliveries_topic, settings.deliveries_partitions
                ),
                within=60,
                message="hooklane_consumer_lag of the deliverer's partitions",
            )
            assert all(s.process.returncode is None for s in stack)
    for service in stack:
        # one line for the cause while it lasted, one when it was gone
        assert len(service.events("kafka.refused")) == 1, (
            service.name,
            service.events("kafka.refused"),
        )
        assert service.events("kafka.accepted"), service.name
    assert_clean(stack, SECRETS)


async def caught_up(service: Service, topic: str, partitions: int) -> bool:
    """Whether ``service`` exports ``hooklane_consumer_lag`` 0 for each partition of ``topic``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{service.ops_port}/metrics") as response,
    ):
        text = await response.text()
    lag = {
        sample.labels["partition"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "hooklane_consumer_lag"
        for sample in family.samples
        if sample.labels.get("topic") == topic
    }
    return lag == {str(p): 0.0 for p in range(partitions)}


CERTIFICATE_REFUSALS = [
    ("unknown CA", "scram", "certificate verify failed: unable to get local issuer certificate"),
    ("host name mismatch", "mtls", "IP address mismatch"),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("case", "kind", "cause"), CERTIFICATE_REFUSALS)
async def test_the_api_serves_while_the_broker_is_refused_and_connects_once_trusted(
    case: str,
    kind: str,
    cause: str,
    secured: Secured,
    database_url: str,
    tenant: TenantKey,
    tmp_path: Path,
) -> None:
    """The API started while TLS fails does not exit: it serves, /readyz names `kafka`
    and the cause, POST /events answers 503 with the error envelope; once the mounted
    CA file holds the broker's CA it connects and accepts events, without a restart."""
    cafile = tmp_path / "ca.pem"
    wrong: dict[str, Any] = {"kafka_ssl_cafile": str(cafile)}
    if case == "unknown CA":
        shutil.copyfile(secured.other_ca, cafile)
    else:
        shutil.copyfile(secured.ca, cafile)
        wrong["kafka_bootstrap_servers"] = secured.broker.bootstrap("WRONGHOST")
    settings = secured_settings(
        database_url, **connection(secured, kind, **wrong), log_level="DEBUG"
    )
    await create_topics(settings.replace(**connection(secured, kind)), [TOPIC])
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap is not None
    async with running(settings, ("api",)) as stack:
        api = stack.services["api"]
        await wait_until(lambda: api_answers(stack), within=60, message="the API serves")
        await wait_refused(api, bootstrap, cause)
        status, body = await post_event(stack, tenant, 0)
        assert status == 503, body
        assert body["error"]["code"] == "unavailable", body
        if case == "unknown CA":
            shutil.copyfile(secured.ca, cafile)  # the Secret is corrected
            await wait_until(api.ready, within=90, message="the API ready")
            status, body = await post_event(stack, tenant, 1)
            assert status == 202, body
        assert api.process.returncode is None
    assert len(api.events("kafka.refused")) == 1, api.events("kafka.refused")


def encrypted_client_key(secured: Secured, directory: Path) -> tuple[str, str]:
    """A client certificate of the test CA and its key, encrypted with KEY_PASSWORD."""
    assert secured.authority is not None
    issued = secured.authority.issue_cert("hooklane-client")
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    (directory / "client.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )
    issued.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    return str(directory / "client.pem"), str(directory / "client.key")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["mtls", "oauth"])
async def test_no_secret_in_any_line_of_a_full_run_at_debug(
    kind: str,
    secured: Secured,
    database_url: str,
    pool: asyncpg.Pool,
    tenant: TenantKey,
    tmp_path: Path,
) -> None:
    """API, router and deliverer at DEBUG with a client key password (SSL, the
    certificate required) or an OAuth client secret (SASL_SSL, OAUTHBEARER): events
    published through the API and `hooklane publish` arrive, and no line any of them
    (or the CLI) wrote holds the secret."""
    certificate, key = encrypted_client_key(secured, tmp_path)
    extra: dict[str, Any] = {
        "kafka_ssl_certfile": certificate,
        "kafka_ssl_keyfile": key,
        "kafka_ssl_key_password": KEY_PASSWORD,
    }
    async with serving(secured.tokens), Receiver() as rx:  # the token URL has its port now
        settings = secured_settings(
            database_url, **connection(secured, kind, **extra), log_level="DEBUG"
        )
        await create_topics(settings, [TOPIC])
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        async with running(settings) as stack:
            for service in stack:
                await wait_until(service.ready, within=90, message=f"{service.name} ready")
            status, body = await post_event(stack, tenant, 0)
            assert status == 202, body
            published = await publish(settings, tenant, 1, (KEY_PASSWORD, OAUTH_SECRET))
            await wait_for_events(rx, ["hook"], [body["id"], published], within=60)
    assert_clean(stack, (KEY_PASSWORD, OAUTH_SECRET))
    if kind == "oauth":
        assert secured.tokens.issued >= 3  # each process fetched its own token
