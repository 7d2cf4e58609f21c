"""Settings, built once from ``HOOKLANE_*`` environment variables and passed in.

This is the only module that reads ``os.environ``. Every setting has a default that
works on a developer machine; ``Settings.from_env`` validates everything up front and
raises ``SettingsError`` with a one-line explanation naming the variable.

``hooklane up`` writes the stack's addresses to ``.hooklane/env`` (``ENV_FILE``) in the
checkout; the ``hooklane`` commands pass that file to ``from_env``, which takes from it
only what the environment does not set (the environment wins).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dispatcher.durations import parse_duration, parse_schedule

PREFIX = "HOOKLANE_"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/hooklane"
# Short in-memory retries (about a minute in total), then the long, parked schedule.
DEFAULT_FETCH_MAX_WAIT_MS = 500
DEFAULT_RETRY_SCHEDULE = "1s,2s,4s,8s,15s,30s,5m,30m,2h,5h,10h"
# Written by `hooklane up` in the directory it runs in; read by the other commands there.
ENV_FILE = Path(".hooklane") / "env"
# The Kafka connection (DESIGN §10; dispatcher.kafka.connection builds the clients).
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
TOKEN_PROVIDERS = ("client_credentials", "aws_msk_iam")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True, slots=True)
class Settings:
    """All runtime configuration of Hooklane's processes."""

    database_url: str = DEFAULT_DATABASE_URL
    # None means: start the embedded broker (``hooklane up`` only).
    kafka_bootstrap_servers: str | None = None
    # How every Kafka client connects (DESIGN §10). Secrets are left out of repr().
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = dataclasses.field(default=None, repr=False)
    kafka_sasl_password_file: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_key_password: str | None = dataclasses.field(default=None, repr=False)
    kafka_ssl_check_hostname: bool = True
    kafka_oauth_token_provider: str | None = None
    kafka_oauth_token_url: str | None = None
    kafka_oauth_client_id: str | None = None
    kafka_oauth_client_secret: str | None = dataclasses.field(default=None, repr=False)
    kafka_oauth_scope: str | None = None
    topic_prefix: str = "hooklane."
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    delivery_timeout_s: float = 10.0
    retry_schedule: tuple[float, ...] = parse_schedule(DEFAULT_RETRY_SCHEDULE)
    # Failures younger than this retry in memory; older ones park the lane in Postgres.
    park_after: float = 60.0
    retry_window: float = 3 * 86400.0
    auto_disable_after: float = 5 * 86400.0
    retry_after_max: float = 3600.0
    max_in_flight: int = 512
    max_in_flight_per_webhook: int = 16
    # Comma-separated Fernet keys: the first encrypts, all decrypt (rotation).
    secret_key: str | None = None
    allow_private_targets: bool = False
    allowed_target_cidrs: tuple[str, ...] = ()
    attempt_retention_days: int = 30
    deliveries_partitions: int = 16
    topic_partitions: int = 8
    # How long a router/deliverer fetch waits for data. Apache Kafka answers a waiting
    # fetch as soon as data arrives, so a long wait costs no latency, and a short one
    # makes every idle consumer send ~100 fetches a second per broker (load, and
    # managed services' request quotas). The embedded tansu uses 5 (EMBEDDED_DEFAULTS).
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS
    # Static group membership (group.instance.id) of a router or deliverer: a member
    # restarted within the session timeout gets its partitions back without a
    # group-wide rebalance. Unset: dynamic membership. deploy/ sets the pod name.
    instance_id: str | None = None
    # The idempotent producer (no duplicate or reordered batch on a retried send);
    # off only for brokers without it (the embedded tansu).
    kafka_idempotence: bool = True
    # Compression of what Hooklane produces (delivery tasks, dead letters, events it
    # publishes): none, gzip, snappy, lz4 or zstd. Measured on ~800-byte tasks: zstd
    # makes them 72% smaller for ~2.6 us more CPU per delivery (encode and decode,
    # about 3% of the pipeline's cost), so it pays where bytes are billed or scarce.
    kafka_compression: str = "none"
    # What ``hooklane up`` starts when no bootstrap servers are set: tansu or kafka
    # (left unset: Apache Kafka where Java 17+ and Maven can run it, tansu otherwise).
    embedded_broker: str = "kafka"
    # How long the dead-letter topic keeps what was refused (retention.ms at creation):
    # long, so an operator can still read and republish it.
    dead_letter_retention: float = 90 * 86400.0
    log_level: str = "INFO"
    log_format: str = "auto"  # auto | json | console
    # Replication of the topics Hooklane creates; None lets the cluster decide
    # (its default.replication.factor). The embedded broker needs 1.
    kafka_replication_factor: int | None = None
    event_loop: str = "auto"  # auto (uvloop where it imports) | uvloop | asyncio
    # The HTTP client deliveries go out with: the lean httptools one, or aiohttp's.
    sender: str = "fast"  # fast | aiohttp
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    metrics_webhook_labels: bool = False
    # Fraction of per-delivery success log lines kept (failures are always logged).
    log_sample: float = 1.0
    portal_link_ttl: float = 3600.0
    # Space-separated CSP frame-ancestors sources; empty: the portal cannot be framed.
    portal_frame_ancestors: str = ""
    pause_max_backlog: int = 1_000_000
    dedup_window: float = 86400.0
    validate_events: bool = True
    # http://host:port of an HTTP proxy every delivery and token request leaves through
    # (CONNECT, also for http:// targets); None: straight out.
    egress_proxy: str | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = None
    ) -> Settings:
        """Build settings from ``HOOKLANE_*`` variables, validating every value.

        ``env_file`` (``KEY=value`` lines, as ``hooklane up`` writes ``ENV_FILE``) fills
        in the variables ``environ`` lacks; a missing file is no error.
        """
        env = with_env_file(os.environ if environ is None else environ, env_file)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[field.name] = _PARSERS.get(field.name, _parse_str)(raw)
            except ValueError as exc:
                raise SettingsError(f"{PREFIX}{field.name.upper()}={raw!r}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated."""
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``SettingsError`` for values that parse but make no sense."""
        _check_database_url(self.database_url)
        checks: list[tuple[bool, str, str]] = [
            (self.delivery_timeout_s > 0, "DELIVERY_TIMEOUT_S", "must be positive"),
            (all(d > 0 for d in self.retry_schedule), "RETRY_SCHEDULE", "delays must be > 0"),
            (self.park_after >= 0, "PARK_AFTER", "must not be negative"),
            (self.retry_window > 0, "RETRY_WINDOW", "must be positive"),
            (self.auto_disable_after > 0, "AUTO_DISABLE_AFTER", "must be positive"),
            (self.retry_after_max > 0, "RETRY_AFTER_MAX", "must be positive"),
            (self.max_in_flight > 0, "MAX_IN_FLIGHT", "must be positive"),
            (self.max_in_flight_per_webhook > 0, "MAX_IN_FLIGHT_PER_WEBHOOK", "must be > 0"),
            (0 < self.api_port < 65536, "API_PORT", "must be a TCP port (1-65535)"),
            (self.attempt_retention_days > 0, "ATTEMPT_RETENTION_DAYS", "must be positive"),
            (self.deliveries_partitions > 0, "DELIVERIES_PARTITIONS", "must be positive"),
            (self.topic_partitions > 0, "TOPIC_PARTITIONS", "must be positive"),
            (0 < self.fetch_max_wait_ms <= 10_000, "FETCH_MAX_WAIT_MS", "must be 1-10000"),
            (self.dead_letter_retention > 0, "DEAD_LETTER_RETENTION", "must be positive"),
            (
                self.instance_id is None or 0 < len(self.instance_id) <= 200,
                "INSTANCE_ID",
                "must be 1-200 characters (or unset: dynamic membership)",
            ),
            (bool(self.topic_prefix.strip()), "TOPIC_PREFIX", "must not be empty"),
            (
                self.kafka_replication_factor is None or self.kafka_replication_factor > 0,
                "KAFKA_REPLICATION_FACTOR",
                "must be positive (or unset: the cluster's default)",
            ),
            (
                self.event_loop in {"auto", "uvloop", "asyncio"},
                "EVENT_LOOP",
                "must be auto, uvloop or asyncio",
            ),
            (self.sender in {"fast", "aiohttp"}, "SENDER", "must be fast or aiohttp"),
            (
                self.kafka_compression in {"none", "gzip", "snappy", "lz4", "zstd"},
                "KAFKA_COMPRESSION",
                "must be none, gzip, snappy, lz4 or zstd",
            ),
            (
                self.embedded_broker in {"tansu", "kafka"},
                "EMBEDDED_BROKER",
                "must be tansu or kafka",
            ),
            (0 < self.metrics_port < 65536, "METRICS_PORT", "must be a TCP port (1-65535)"),
            (0.0 <= self.log_sample <= 1.0, "LOG_SAMPLE", "must be between 0 and 1"),
            (self.portal_link_ttl > 0, "PORTAL_LINK_TTL", "must be positive"),
            (self.pause_max_backlog > 0, "PAUSE_MAX_BACKLOG", "must be positive"),
            (self.dedup_window >= 0, "DEDUP_WINDOW", "must not be negative"),
            (
                self.log_format in {"auto", "json", "console"},
                "LOG_FORMAT",
                "must be auto, json or console",
            ),
            (
                self.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"},
                "LOG_LEVEL",
                "must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
            ),
        ]
        if self.egress_proxy is not None:
            proxy_address(self.egress_proxy)
        for ok, name, problem in checks:
            if not ok:
                raise SettingsError(f"{PREFIX}{name}: {problem}")
        connection_problem = kafka_connection_problem(self)
        if connection_problem is not None:
            raise SettingsError(connection_problem)

    @property
    def deliveries_topic(self) -> str:
        """The internal topic of delivery tasks, keyed by webhook id."""
        return f"{self.topic_prefix}deliveries"

    @property
    def dead_letter_topic(self) -> str:
        """Where malformed messages go, with the reason; never silently dropped."""
        return f"{self.topic_prefix}dead-letter"

    def mirror_topic(self, topic: str) -> str:
        """The Kafka topic that mirrors webhook topic ``topic``."""
        return f"{self.topic_prefix}{topic}"


def proxy_address(url: str) -> tuple[str, int]:
    """The (host, port) of an ``EGRESS_PROXY`` URL; SettingsError unless http://host:port."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (
        parts.scheme != "http"
        or not parts.hostname
        or port is None
        or parts.username is not None
        or parts.path not in {"", "/"}
    ):
        raise SettingsError(f"{PREFIX}EGRESS_PROXY={url!r}: expected http://host:port")
    return parts.hostname, port


def read_env_file(path: Path) -> dict[str, str]:
    """The ``HOOKLANE_*`` assignments of an env file; empty when there is none."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be read: {exc.strerror}") from None
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip().startswith(PREFIX):
            values[name.strip()] = value.strip()
    return values


def with_env_file(environ: Mapping[str, str], env_file: Path | None) -> Mapping[str, str]:
    """``environ`` completed by ``env_file``'s values for the variables it does not set."""
    if env_file is None:
        return environ
    from_file = read_env_file(env_file)
    if not from_file:
        return environ
    return {**from_file, **environ}


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``values`` as ``KEY=value`` lines (mode 0600: it names the database)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{name}={value}\n" for name, value in values.items())
    header = "# Written by `hooklane up`: the running stack's addresses. The environment wins.\n"
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(header + body)
    os.replace(temporary, path)  # readers never see half a file


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _parse_float(raw: str) -> float:
    return parse_duration(raw)


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _parse_fraction(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("must be a number between 0 and 1") from None


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_days(raw: str) -> float:
    # AUTO_DISABLE_AFTER and RETRY_WINDOW take durations: "5d", "36h".
    return parse_duration(raw)


_PARSERS: dict[str, Any] = {
    "api_port": _parse_int,
    "delivery_timeout_s": _parse_float,
    "retry_schedule": parse_schedule,
    "park_after": _parse_float,
    "retry_window": _parse_days,
    "auto_disable_after": _parse_days,
    "retry_after_max": _parse_float,
    "max_in_flight": _parse_int,
    "max_in_flight_per_webhook": _parse_int,
    "allow_private_targets": _parse_bool,
    "allowed_target_cidrs": _parse_list,
    "attempt_retention_days": _parse_int,
    "deliveries_partitions": _parse_int,
    "topic_partitions": _parse_int,
    "fetch_max_wait_ms": _parse_int,
    "kafka_idempotence": _parse_bool,
    "dead_letter_retention": _parse_days,
    "kafka_replication_factor": _parse_int,
    "metrics_port": _parse_int,
    "metrics_webhook_labels": _parse_bool,
    "log_sample": _parse_fraction,
    "portal_link_ttl": _parse_float,
    "pause_max_backlog": _parse_int,
    "dedup_window": _parse_float,
    "validate_events": _parse_bool,
    "kafka_security_protocol": lambda raw: raw.strip().upper(),
    "kafka_sasl_mechanism": lambda raw: raw.strip().upper(),
    "kafka_ssl_check_hostname": _parse_bool,
    # a password is taken as written (no strip): spaces may be part of it
    "kafka_sasl_password": str,
    "kafka_ssl_key_password": str,
    "kafka_oauth_client_secret": str,
}


def kafka_connection_problem(s: Settings) -> str | None:
    """What is inconsistent in the Kafka connection settings, as one line naming what to
    set; None when they fit together. Secrets are never quoted."""
    p = f"{PREFIX}KAFKA_"
    protocol, mechanism = s.kafka_security_protocol, s.kafka_sasl_mechanism
    tls, sasl = protocol in {"SSL", "SASL_SSL"}, protocol.startswith("SASL_")
    if protocol not in SECURITY_PROTOCOLS:
        return f"{p}SECURITY_PROTOCOL={protocol}: must be {', '.join(SECURITY_PROTOCOLS)}"
    if mechanism is not None and mechanism not in SASL_MECHANISMS:
        return f"{p}SASL_MECHANISM={mechanism}: must be {', '.join(SASL_MECHANISMS)}"
    if sasl and mechanism is None:
        mechanisms = ", ".join(SASL_MECHANISMS)
        return f"{p}SECURITY_PROTOCOL={protocol} needs {p}SASL_MECHANISM ({mechanisms})"
    sasl_settings = {
        "SASL_MECHANISM": mechanism,
        "SASL_USERNAME": s.kafka_sasl_username,
        "SASL_PASSWORD": s.kafka_sasl_password,
        "SASL_PASSWORD_FILE": s.kafka_sasl_password_file,
    }
    if not sasl and (name := _first_set(sasl_settings)):
        return f"{p}{name} is set: set {p}SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
    tls_settings = {
        "SSL_CAFILE": s.kafka_ssl_cafile,
        "SSL_CERTFILE": s.kafka_ssl_certfile,
        "SSL_KEYFILE": s.kafka_ssl_keyfile,
        "SSL_KEY_PASSWORD": s.kafka_ssl_key_password,
    }
    if not tls and (name := _first_set(tls_settings)):
        return f"{p}{name} is set: set {p}SECURITY_PROTOCOL=SSL or SASL_SSL to use TLS"
    if s.kafka_ssl_keyfile and not s.kafka_ssl_certfile:
        return f"{p}SSL_KEYFILE needs {p}SSL_CERTFILE (the client certificate)"
    if s.kafka_ssl_key_password and not s.kafka_ssl_certfile:
        return f"{p}SSL_KEY_PASSWORD needs {p}SSL_CERTFILE and {p}SSL_KEYFILE"
    files = {
        "SSL_CAFILE": s.kafka_ssl_cafile,
        "SSL_CERTFILE": s.kafka_ssl_certfile,
        "SSL_KEYFILE": s.kafka_ssl_keyfile,
        "SASL_PASSWORD_FILE": s.kafka_sasl_password_file,
    }
    for name, path in files.items():
        if path and not Path(path).is_file():
            return f"{p}{name}={path}: no such file"
    oauth = {
        "OAUTH_TOKEN_PROVIDER": s.kafka_oauth_token_provider,
        "OAUTH_TOKEN_URL": s.kafka_oauth_token_url,
        "OAUTH_CLIENT_ID": s.kafka_oauth_client_id,
        "OAUTH_CLIENT_SECRET": s.kafka_oauth_client_secret,
        "OAUTH_SCOPE": s.kafka_oauth_scope,
    }
    if mechanism == "OAUTHBEARER":
        return _oauth_problem(s, p)
    if name := _first_set(oauth):
        return f"{p}{name} is set: it is for {p}SASL_MECHANISM=OAUTHBEARER"
    if mechanism is not None:  # PLAIN and SCRAM: a username and one password
        if not s.kafka_sasl_username:
            return f"{p}SASL_MECHANISM={mechanism} needs {p}SASL_USERNAME"
        if s.kafka_sasl_password is not None and s.kafka_sasl_password_file:
            return f"{p}SASL_PASSWORD and {p}SASL_PASSWORD_FILE are both set: keep one"
        if s.kafka_sasl_password is None and not s.kafka_sasl_password_file:
            return f"{p}SASL_MECHANISM={mechanism} needs {p}SASL_PASSWORD or {p}SASL_PASSWORD_FILE"
    return None


def _oauth_problem(s: Settings, p: str) -> str | None:
    if s.kafka_sasl_username or s.kafka_sasl_password or s.kafka_sasl_password_file:
        return f"{p}SASL_USERNAME/PASSWORD are not used with OAUTHBEARER: unset them"
    provider = s.kafka_oauth_token_provider
    if not provider:
        return (
            f"{p}SASL_MECHANISM=OAUTHBEARER needs {p}OAUTH_TOKEN_PROVIDER"
            " (client_credentials, aws_msk_iam or module:callable)"
        )
    if provider == "client_credentials":
        for name, value in (
            ("OAUTH_TOKEN_URL", s.kafka_oauth_token_url),
            ("OAUTH_CLIENT_ID", s.kafka_oauth_client_id),
            ("OAUTH_CLIENT_SECRET", s.kafka_oauth_client_secret),
        ):
            if not value:
                return f"{p}OAUTH_TOKEN_PROVIDER=client_credentials needs {p}{name}"
        if urlsplit(s.kafka_oauth_token_url or "").scheme not in {"http", "https"}:
            return f"{p}OAUTH_TOKEN_URL={s.kafka_oauth_token_url}: must be an http(s) URL"
    elif provider not in TOKEN_PROVIDERS and not re.fullmatch(r"[\w.]+:\w+", provider):
        return (
            f"{p}OAUTH_TOKEN_PROVIDER={provider}: must be client_credentials,"
            " aws_msk_iam or module:callable"
        )
    return None


def _first_set(values: Mapping[str, object]) -> str | None:
    return next((name for name, value in values.items() if value not in (None, "")), None)


def _check_database_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"postgresql", "postgres"} or not parts.path.strip("/"):
        raise SettingsError(
            f"{PREFIX}DATABASE_URL={url!r}: expected postgresql://user@host:port/dbname"
        )
    try:
        _ = parts.port
    except ValueError:
        raise SettingsError(f"{PREFIX}DATABASE_URL={url!r}: the port is not a number") from None
