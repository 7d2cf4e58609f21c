"""The pinned Apache Kafka release: its version, the java that runs it, its jars.

``deploy/kafka/pom.xml`` pins the release (``kafka.version``); ``ensure_kafka()`` resolves
it with Maven into the git-ignored ``.kafka/<version>/lib`` of the repository root, once:
a marker file (``resolved.json``: the pom's digest and the jar names) makes later calls a
few file checks, and a file lock (``fcntl.flock``) makes pytest-xdist workers that call it
at once run Maven once and wait for it. ``dispatcher.kafka.apache`` runs the jars.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import structlog

from dispatcher.kafka.broker import BrokerError

log = structlog.get_logger(__name__)

POM_RELATIVE = Path("deploy", "kafka", "pom.xml")
CACHE_DIRNAME = ".kafka"
MARKER = "resolved.json"
MIN_JAVA = 17  # Kafka 4.x brokers and tools need Java 17 (clients: 11)
JAVA_PACKAGE = "openjdk-17-jre-headless"


class KafkaToolMissing(BrokerError):
    """``java`` (>= 17) or, to resolve the jars, ``mvn`` is not installed; says what to do."""


def kafka_pom() -> Path:
    """``deploy/kafka/pom.xml`` of the checkout this module runs from."""
    for parent in Path(__file__).resolve().parents:
        if (parent / POM_RELATIVE).is_file():
            return parent / POM_RELATIVE
    raise BrokerError(f"{POM_RELATIVE} not found above {Path(__file__).resolve().parent}")


def kafka_version(pom: Path | None = None) -> str:
    """The Apache Kafka release the pom pins (its ``kafka.version`` property)."""
    pom = pom or kafka_pom()
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(pom).getroot().findtext("m:properties/m:kafka.version", namespaces=namespace)
    if not version:
        raise BrokerError(f"{pom} sets no <kafka.version> property")
    return version.strip()


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``"1.8.0_402"`` is 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def require_java(environ: Mapping[str, str] | None = None) -> str:
    """The ``java`` that runs Kafka: ``$JAVA_HOME/bin/java`` or the first on PATH, >= 17."""
    return _java(environ)[0]


def _java(environ: Mapping[str, str] | None) -> tuple[str, str]:
    env = os.environ if environ is None else environ
    return _require_java(env.get("JAVA_HOME", ""), env.get("PATH", os.defpath))


@cache
def _require_java(java_home: str, path: str) -> tuple[str, str]:
    """The java and its ``-version`` output."""
    home_java = Path(java_home, "bin", "java") if java_home else None
    if home_java is not None and os.access(home_java, os.X_OK):
        java: str | None = str(home_java)
    else:
        java = shutil.which("java", path=path)
    if java is None:
        raise KafkaToolMissing(
            f"java is not installed: Apache Kafka needs Java {MIN_JAVA}+"
            f" (Debian: apt-get install {JAVA_PACKAGE}; or set JAVA_HOME)"
        )
    try:
        output = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaToolMissing(f"{java} -version failed: {exc}") from exc
    major = java_major(output)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major else "an unknown Java"
        raise KafkaToolMissing(
            f"{java} is {found}: Apache Kafka needs Java {MIN_JAVA}+"
            f" (Debian: apt-get install {JAVA_PACKAGE}; or set JAVA_HOME)"
        )
    return java, output


def require_mvn(environ: Mapping[str, str] | None = None) -> str:
    """The ``mvn`` on PATH, which resolves the pinned jars."""
    env = os.environ if environ is None else environ
    mvn = shutil.which("mvn", path=env.get("PATH", os.defpath))
    if mvn is None:
        raise KafkaToolMissing(
            "mvn is not installed: Maven resolves Apache Kafka's jars from"
            f" {POM_RELATIVE} (Debian: apt-get install maven)"
        )
    return mvn


@dataclass(frozen=True, slots=True)
class KafkaRuntime:
    """A resolved release: the java to run it with and its jars."""

    version: str
    java: str
    jars: tuple[Path, ...]
    home: Path  # .kafka/<version>
    java_version: str  # java -version's output

    @property
    def classpath(self) -> str:
        return os.pathsep.join(str(jar) for jar in self.jars)

    @property
    def class_archive(self) -> Path:
        """Where this java's class-data-sharing archive of these jars goes (``class_archive``)."""
        identity = "\0".join([os.path.realpath(self.java), self.java_version, self.classpath])
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return self.home / "cds" / f"kafka-{key}.jsa"


def _digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _resolved(home: Path, version: str, digest: str) -> tuple[Path, ...] | None:
    """The jars of a complete resolution of this pom in ``home``, else None."""
    try:
        marker = json.loads((home / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or (marker.get("version"), marker.get("pom")) != (
        version,
        digest,
    ):
        return None
    jars = tuple(home / "lib" / str(name) for name in marker.get("jars", ()))
    if not jars or not all(jar.is_file() for jar in jars):
        return None
    return jars


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _maven_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("[ERROR]")]
    return (errors or lines or ["no output"])[0][:400]


def _resolve(home: Path, pom: Path, version: str, digest: str, timeout: float) -> None:
    mvn = require_mvn()
    staging = home / f"lib.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"mvn did not resolve Apache Kafka {version} within {timeout:.0f}s"
        ) from exc
    jars = sorted(path.name for path in staging.glob("*.jar")) if staging.is_dir() else []
    if result.returncode != 0 or not jars:
        shutil.rmtree(staging, ignore_errors=True)
        detail = _maven_error(result.stdout + result.stderr)
        raise BrokerError(
            f"mvn could not resolve Apache Kafka {version} from {pom}"
            f" (exit {result.returncode}): {detail}"
        )
    shutil.rmtree(home / "lib", ignore_errors=True)
    shutil.rmtree(home / "cds", ignore_errors=True)  # archives of the old jars
    staging.rename(home / "lib")
    marker = home / f"{MARKER}.{os.getpid()}.tmp"
    marker.write_text(json.dumps({"version": version, "pom": digest, "jars": jars}, indent=1))
    marker.replace(home / MARKER)
    log.info(
        "kafka.resolved",
        version=version,
        jars=len(jars),
        path=str(home / "lib"),
        seconds=round(time.monotonic() - started, 2),
    )


def ensure_kafka(
    pom: Path | None = None, cache_root: Path | None = None, timeout: float = 900.0
) -> KafkaRuntime:
    """The pinned release, resolved with mvn into ``<repo>/.kafka/<version>/lib`` if needed.

    Raises KafkaToolMissing (a one-line message) without java >= 17, or without mvn
    when the jars are not there yet; BrokerError when Maven cannot resolve them.
    """
    pom = pom or kafka_pom()
    java, java_version = _java(None)
    version = kafka_version(pom)
    digest = _digest(pom)
    home = (cache_root or pom.parents[2] / CACHE_DIRNAME) / version
    jars = _resolved(home, version, digest)
    if jars is None:
        home.mkdir(parents=True, exist_ok=True)
        with _locked(home.parent / f"{version}.lock"):
            jars = _resolved(home, version, digest)  # another process may have done it
            if jars is None:
                _resolve(home, pom, version, digest, timeout)
                jars = _resolved(home, version, digest)
                if jars is None:  # pragma: no cover - _resolve wrote it
                    raise BrokerError(f"resolving Apache Kafka {version} left no {MARKER}")
    return KafkaRuntime(version, java, jars, home, java_version)
