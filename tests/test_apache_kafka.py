"""Apache Kafka (KRaft) from deploy/kafka/pom.xml, started by dispatcher.kafka.apache.

One single-node broker serves the module (``kafka``); the cluster test starts its own
three nodes. Everything skips, with the reason, only where java >= 17 or mvn is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError

from dispatcher.kafka.apache import ApacheKafkaBroker, class_archive
from dispatcher.kafka.broker import BrokerError
from dispatcher.kafka.kafka_release import (
    KafkaRuntime,
    KafkaToolMissing,
    ensure_kafka,
    java_major,
    kafka_pom,
    kafka_version,
    require_java,
    require_mvn,
)
from dispatcher.kafka.kraft_node import Listener, render_properties
from dispatcher.kafka.metadata_probe import metadata_brokers

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runtime() -> KafkaRuntime:
    try:
        return ensure_kafka()
    except KafkaToolMissing as exc:
        pytest.skip(str(exc))


# A SCRAM user, added when the storage is formatted, for the SASL listener beside PLAINTEXT:
# the hooks (listeners, properties, format_args) that security tests build on.
SCRAM_USER, SCRAM_PASSWORD = "alice", "alice-secret"


@pytest.fixture(scope="module")
def kafka(runtime: KafkaRuntime) -> Iterator[ApacheKafkaBroker]:
    broker = ApacheKafkaBroker(
        listeners=[Listener("SASL", "SASL_PLAINTEXT")],
        properties={
            "listener.name.sasl.sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.sasl.scram-sha-256.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        },
        format_args=[
            "--add-scram",
            f"SCRAM-SHA-256=[name={SCRAM_USER},password={SCRAM_PASSWORD}]",
        ],
    )
    with broker:
        yield broker


@pytest.fixture
async def admin(kafka: ApacheKafkaBroker) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def new_topic(admin: AIOKafkaAdminClient, partitions: int = 1, **configs: str) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    assert [error for _, error, *_ in response.topic_errors] == [0]
    return name


async def consume(
    bootstrap: str, topic: str, count: int, within: float = 20.0, **options: object
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **options
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + within
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            values += [record.value for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    return values


# -- without a broker ------------------------------------------------------------------


def test_pom_pins_one_kafka_4_release() -> None:
    version = kafka_version(kafka_pom())
    assert kafka_pom() == REPO / "deploy" / "kafka" / "pom.xml"
    assert version.split(".")[0] == "4", version
    assert ".kafka/" in (REPO / ".gitignore").read_text().splitlines()


def test_java_versions_are_read_from_both_formats() -> None:
    assert java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert java_major('openjdk version "21" 2023-09-19') == 21
    assert java_major('java version "1.8.0_402"') == 8
    assert java_major("garbage") is None


def test_missing_tools_are_one_line_errors_naming_the_package(tmp_path: Path) -> None:
    empty = {"PATH": str(tmp_path)}
    with pytest.raises(KafkaToolMissing) as java:
        require_java(empty)
    with pytest.raises(KafkaToolMissing) as mvn:
        require_mvn(empty)
    for error, package in ((java, "openjdk-17"), (mvn, "maven")):
        message = str(error.value)
        assert "\n" not in message
        assert package in message

    old = tmp_path / "java"
    old.write_text("#!/bin/sh\necho 'java version \"1.8.0_402\"' >&2\n")
    old.chmod(0o755)
    with pytest.raises(KafkaToolMissing, match=r"is Java 8: Apache Kafka needs Java 17\+"):
        require_java(empty)


def test_properties_are_escaped_for_java() -> None:
    text = render_properties({"a.b": "x=y:z", "jaas": 'Module required user="a\\b";', " k": " v"})
    assert text == 'a.b=x=y:z\njaas=Module required user="a\\\\b";\n\\ k=\\ v\n'


def test_cached_resolution_is_fast(runtime: KafkaRuntime) -> None:
    started = time.monotonic()
    again = ensure_kafka()
    assert time.monotonic() - started < 0.5
    assert again.jars == runtime.jars
    names = {jar.name for jar in runtime.jars}
    assert f"kafka_2.13-{runtime.version}.jar" in names
    assert any(name.startswith("log4j-core-") for name in names)


def test_concurrent_first_resolutions_run_maven_once(runtime: KafkaRuntime, tmp_path: Path) -> None:
    # A mvn on PATH that counts its runs: three processes resolve into an empty cache
    # at once; one runs Maven, the others wait on the lock and read its marker.
    try:
        real = require_mvn()
    except KafkaToolMissing as exc:
        pytest.skip(str(exc))
    shim, runs = tmp_path / "bin", tmp_path / "runs"
    shim.mkdir()
    (shim / "mvn").write_text(f'#!/bin/sh\necho run >> "{runs}"\nexec "{real}" "$@"\n')
    (shim / "mvn").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    script = (
        "import sys; from pathlib import Path;"
        " from dispatcher.kafka.kafka_release import ensure_kafka;"
        "print(ensure_kafka(cache_root=Path(sys.argv[1])).classpath)"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "cache")],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs
    classpaths = {out.strip().splitlines()[-1] for out, _ in outputs}  # after any logs
    assert len(classpaths) == 1
    assert runs.read_text().count("run") == 1
    jars = classpaths.pop().split(os.pathsep)
    assert sorted(Path(jar).name for jar in jars) == sorted(jar.name for jar in runtime.jars)


def test_a_failed_class_archive_training_is_not_retried(
    runtime: KafkaRuntime, tmp_path: Path
) -> None:
    elsewhere = dataclasses.replace(runtime, home=tmp_path)
    assert elsewhere.class_archive.parent == tmp_path / "cds"
    failed = elsewhere.class_archive.with_suffix(".failed")
    failed.parent.mkdir()
    failed.write_text("the training node wrote no archive\n")
    started = time.monotonic()
    assert class_archive(elsewhere) is None
    assert time.monotonic() - started < 0.5


# -- one node --------------------------------------------------------------------------


def test_single_node_reports_itself_and_its_resources(
    kafka: ApacheKafkaBroker, runtime: KafkaRuntime
) -> None:
    assert kafka.pid is not None
    assert kafka.start_seconds is not None and kafka.start_seconds < 60
    assert metadata_brokers("127.0.0.1", kafka.port) == {1}
    rss = kafka.rss()
    assert rss is not None and rss < 700 * 2**20  # -Xmx512m and the JVM's own
    log_path = kafka.log_path()
    assert log_path is not None and log_path.parent.is_dir()
    # the class-data-sharing archive of a trained node is made once and mapped
    archive = class_archive(runtime)
    assert archive is not None and archive == runtime.class_archive
    assert str(archive) in Path(f"/proc/{kafka.pid}/maps").read_text()
    print(
        f"single node: start {kafka.start_seconds:.2f}s (format {kafka.format_seconds:.2f}s),"
        f" RSS {rss / 2**20:.0f} MiB"
    )


async def test_produce_and_consume(kafka: ApacheKafkaBroker, admin: AIOKafkaAdminClient) -> None:
    topic = await new_topic(admin, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(20):
            await producer.send(topic, f"m{i}".encode(), key=str(i % 4).encode())
        await producer.flush()
    finally:
        await producer.stop()
    values = await consume(kafka.bootstrap_servers, topic, 20)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(20))


async def test_an_extra_sasl_listener_authenticates_scram_users(
    kafka: ApacheKafkaBroker, admin: AIOKafkaAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    topic = await new_topic(admin)
    sasl = kafka.bootstrap("SASL")
    assert sasl != kafka.bootstrap_servers
    options: dict[str, Any] = {
        "bootstrap_servers": sasl,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": SCRAM_USER,
    }
    producer = AIOKafkaProducer(**options, sasl_plain_password=SCRAM_PASSWORD)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over sasl")
    finally:
        await producer.stop()
    assert await consume(kafka.bootstrap_servers, topic, 1) == [b"over sasl"]

    wrong = AIOKafkaProducer(**options, sasl_plain_password="wrong")
    with pytest.raises(KafkaConnectionError):
        await wrong.start()
    await wrong.stop()
    assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in caplog.text


async def test_idempotent_producer(kafka: ApacheKafkaBroker, admin: AIOKafkaAdminClient) -> None:
    topic = await new_topic(admin)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        metadata = [await producer.send_and_wait(topic, f"i{i}".encode()) for i in range(10)]
    finally:
        await producer.stop()
    assert [m.offset for m in metadata] == list(range(10))
    assert await consume(kafka.bootstrap_servers, topic, 10) == [
        f"i{i}".encode() for i in range(10)
    ]


async def test_aborted_transactions_are_invisible_to_read_committed(
    kafka: ApacheKafkaBroker, admin: AIOKafkaAdminClient
) -> None:
    topic = await new_topic(admin)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, transactional_id=f"tx-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.flush()
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-2")
    finally:
        await producer.stop()
    everything = await consume(
        kafka.bootstrap_servers, topic, 3, isolation_level="read_uncommitted"
    )
    assert everything == [b"committed-1", b"aborted", b"committed-2"]
    # committed-2 follows the aborted record: reading it means having skipped that one
    committed = await consume(kafka.bootstrap_servers, topic, 2, isolation_level="read_committed")
    assert committed == [b"committed-1", b"committed-2"]


async def test_topic_configs_are_described_back(admin: AIOKafkaAdminClient) -> None:
    configs = {"retention.ms": "3600000", "max.message.bytes": "2097152"}
    topic = await new_topic(admin, partitions=3, **configs)
    [response] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict.fromkeys(configs))]
    )
    [(error_code, _message, _type, name, entries)] = response.resources
    assert (error_code, name) == (0, topic)
    assert {entry[0]: entry[1] for entry in entries} == configs
    [described] = await admin.describe_topics([topic])
    assert len(described["partitions"]) == 3


async def test_topics_are_not_auto_created(
    kafka: ApacheKafkaBroker, admin: AIOKafkaAdminClient
) -> None:
    topic = f"t-missing-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=1500)
    await producer.start()
    try:
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    assert topic not in await admin.list_topics()


ORPHANING_PARENT = """
import time
from dispatcher.kafka.apache import ApacheKafkaBroker

broker = ApacheKafkaBroker()
broker.start()
print("node", broker.pid, broker.directory, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_node_dies_with_a_sigkilled_parent(runtime: KafkaRuntime) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANING_PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("node "):  # after structlog's lines
            line = parent.stdout.readline()
            assert line, "the parent exited"
        _, pid_text, directory = line.split()
        pid = int(pid_text)
        assert alive(pid)
    finally:
        parent.kill()
        parent.wait()
    try:
        deadline = time.monotonic() + 15
        while alive(pid):
            assert time.monotonic() < deadline, "the Kafka node outlived its parent"
            time.sleep(0.05)
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # what a SIGKILLed parent leaves


def test_freeze_and_thaw(kafka: ApacheKafkaBroker) -> None:
    kafka.freeze()
    try:
        assert kafka.frozen()
        with pytest.raises(OSError):  # TimeoutError: the kernel accepts, nobody answers
            metadata_brokers("127.0.0.1", kafka.port, timeout=0.5)
        assert kafka.frozen(), "something else sent the node SIGCONT"
    finally:
        kafka.thaw()
    assert metadata_brokers("127.0.0.1", kafka.port, timeout=5.0) == {1}
    assert not kafka.frozen()


def test_a_bad_config_fails_the_format_with_its_cause(runtime: KafkaRuntime) -> None:
    broker = ApacheKafkaBroker(properties={"num.io.threads": "many"})
    with pytest.raises(BrokerError) as error:
        broker.start(timeout=30)
    assert str(error.value) == (
        "kafka-storage format failed: node 1: format exited 1: ConfigException:"
        " Invalid value many for configuration num.io.threads: Not a number of type INT"
    )
    assert broker.directory is None


def test_a_node_that_exits_fails_the_start_with_its_cause(runtime: KafkaRuntime) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = ApacheKafkaBroker(port=taken.getsockname()[1])
        with pytest.raises(
            BrokerError, match=r"node 1 exited with code 1: .*Address already in use"
        ):
            broker.start(timeout=30)
    assert broker.directory is None
    assert broker.pid is None


# -- three nodes -----------------------------------------------------------------------


async def isr_sizes(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [len(partition["isr"]) for partition in described["partitions"]]


async def create_replicated_topic(bootstrap: str, topic: str) -> str:
    """Create ``topic`` with the cluster's defaults; its ``min.insync.replicas``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, -1, replica_assignments={})])
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
        )
    finally:
        await admin.close()
    [(_error, _message, _type, _name, [entry])] = response.resources
    value: str = entry[1]
    return value


async def produce_all(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=30000)
    await producer.start()
    try:
        for partition in (0, 1):
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


def wait_full_isr(bootstrap: str, topic: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (sizes := asyncio.run(isr_sizes(bootstrap, topic))) != [3, 3]:
        assert time.monotonic() < deadline, sizes
        time.sleep(0.2)


@pytest.mark.timeout(300)  # three JVMs on two shared cores: a minute when the machine is busy
def test_three_nodes_survive_a_stopped_and_a_killed_node(runtime: KafkaRuntime) -> None:
    # Synchronous: the nodes die with the thread that starts them, so this one does.
    cluster = ApacheKafkaBroker(nodes=3)
    cluster.start(timeout=120)
    try:
        print(f"three nodes: start {cluster.start_seconds:.2f}s")
        assert all(cluster.pids)
        for index in range(3):
            assert metadata_brokers("127.0.0.1", cluster.node_port(index)) == {1, 2, 3}
        bootstrap, topic = cluster.bootstrap_servers, f"t-{uuid.uuid4().hex[:10]}"
        # the cluster's defaults: replication 3 (the ISRs below), min.insync.replicas 2
        assert asyncio.run(create_replicated_topic(bootstrap, topic)) == "2"
        wait_full_isr(bootstrap, topic)
        asyncio.run(produce_all(bootstrap, topic, b"all-up"))

        cluster.stop_node(2)
        assert cluster.pids[2] is None
        asyncio.run(produce_all(bootstrap, topic, b"one-stopped"))  # acks=all, ISR 2
        cluster.start_node(2)
        wait_full_isr(bootstrap, topic)

        cluster.kill_node(0)
        asyncio.run(produce_all(bootstrap, topic, b"one-killed"))
        cluster.start_node(0)
        wait_full_isr(bootstrap, topic)
        print(
            f"three nodes: restart after stop {cluster.restart_seconds[2]:.2f}s,"
            f" after kill {cluster.restart_seconds[0]:.2f}s"
        )
        values = asyncio.run(consume(bootstrap, topic, 6))
        assert sorted(values) == sorted([b"all-up", b"one-stopped", b"one-killed"] * 2)
    finally:
        cluster.stop()
    assert cluster.directory is None
    assert cluster.pids == [None, None, None]
