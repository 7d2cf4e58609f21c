"""The connection options of every Kafka client (DESIGN §10): the one builder.

``client_options(settings)`` turns the ``HOOKLANE_KAFKA_*`` connection settings into the
keyword arguments every aiokafka client takes (``bootstrap_servers``,
``security_protocol``, ``ssl_context``, ``sasl_*``): the router's and the deliverer's
consumers, the producer of the router and the API, the admin clients (topics, readiness),
the lag reader, ``hooklane status`` and ``publish`` and the bench. No Kafka client is
built from anything else, so a secured cluster works for all of them or for none.

``Settings.validate`` has already refused inconsistent combinations (a SASL mechanism
without credentials, certificate files without TLS, ...); this module only builds.
The password file is read each time options are built, so a rotated mounted secret is
used by the next connection without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

import structlog
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

from dispatcher.kafka.oauth import token_provider
from dispatcher.settings import PREFIX, Settings

log = structlog.get_logger(__name__)

# The longest pause between connection attempts while the brokers refuse us.
MAX_RETRY_DELAY_S = 10.0


class KafkaConnectionSettingsError(ValueError):
    """The connection settings cannot build a client (e.g. no bootstrap servers)."""


def uses_tls(settings: Settings) -> bool:
    """Whether clients speak TLS to the brokers (``SSL`` or ``SASL_SSL``)."""
    return settings.kafka_security_protocol in {"SSL", "SASL_SSL"}


def uses_sasl(settings: Settings) -> bool:
    """Whether clients authenticate with SASL (``SASL_PLAINTEXT`` or ``SASL_SSL``)."""
    return settings.kafka_security_protocol.startswith("SASL_")


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments that connect any aiokafka client to the configured cluster."""
    if not settings.kafka_bootstrap_servers:
        raise KafkaConnectionSettingsError(f"{PREFIX}KAFKA_BOOTSTRAP_SERVERS is not set")
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        mechanism = settings.kafka_sasl_mechanism
        options["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = token_provider(settings)
        else:
            options["sasl_plain_username"] = settings.kafka_sasl_username
            options["sasl_plain_password"] = sasl_password(settings)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: the CA file (or the system's CAs), the optional client
    certificate, hostname checking unless turned off."""
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            password=settings.kafka_ssl_key_password,
        )
    return context


def sasl_password(settings: Settings) -> str | None:
    """The SASL password: the setting, or the file's content without the final newline."""
    if settings.kafka_sasl_password_file:
        text = Path(settings.kafka_sasl_password_file).read_text(encoding="utf-8")
        return text.rstrip("\r\n")
    return settings.kafka_sasl_password


async def connection_problem(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """Why the brokers refuse this client, as one line naming the broker and the cause
    (``kafka broker HOST:PORT: ...``), or None when every bootstrap address accepts.

    aiokafka's clients log the cause of a failed bootstrap in their own words and then
    raise a bare "Unable to bootstrap"; this connects to each address directly, with
    the same options, to say what is wrong. Never quotes a secret.
    """
    try:
        options = client_options(settings)
    except (OSError, ssl.SSLError, ValueError, RuntimeError) as exc:  # files, providers
        return f"kafka client settings: {type(exc).__name__}: {exc}"
    options.pop("bootstrap_servers")
    for address in (settings.kafka_bootstrap_servers or "").split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(
                    host, int(port), request_timeout_ms=int(timeout_s * 1000), **options
                )
            conn.close()
        except Exception as exc:  # each failure is described, none escapes
            return f"kafka broker {address.strip()}: {describe_failure(settings, exc)}"
    return None


def describe_failure(settings: Settings, exc: BaseException) -> str:
    """The cause of a refused connection in words that say what to set."""
    p = f"{PREFIX}KAFKA_"
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__
    if isinstance(cause, SaslAuthenticationFailed):
        return (
            f"authentication failed ({settings.kafka_sasl_mechanism} as"
            f" {settings.kafka_sasl_username or 'the token subject'}): check {p}SASL_USERNAME"
            f" and the password, or the token provider"
        )
    if isinstance(cause, UnsupportedSaslMechanismError):
        return f"the broker does not offer {settings.kafka_sasl_mechanism}: {cause}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or str(cause)
        if "mismatch" in reason:
            return (
                f"TLS: certificate verify failed: {reason} (the name in {p}BOOTSTRAP_SERVERS"
                f" must be in the broker's certificate; {p}SSL_CHECK_HOSTNAME=false skips this)"
            )
        return (
            f"TLS: certificate verify failed: {reason} (is the broker's CA in"
            f" {p}SSL_CAFILE={settings.kafka_ssl_cafile or 'unset: the system CAs'}?)"
        )
    if isinstance(cause, ssl.SSLError):
        return (
            f"TLS: {cause.reason or cause} (does this listener speak TLS,"
            " or want a client certificate?)"
        )
    if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
        return f"does not answer ({type(cause).__name__}: {cause})"
    if isinstance(cause, TimeoutError):
        return (
            f"no answer in time (is {p}SECURITY_PROTOCOL={settings.kafka_security_protocol}"
            " what this listener speaks?)"
        )
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


async def wait_until_accepted(
    settings: Settings,
    stopping: asyncio.Event,
    first_delay_s: float = 1.0,
    max_delay_s: float = MAX_RETRY_DELAY_S,
) -> bool:
    """Wait, retrying with doubling delays, until the brokers accept this client (True),
    or until ``stopping`` is set (False). One log line per cause, when it changes.

    Routers and deliverers call this before their clients start, so bad credentials or
    certificates keep the process up with ``/readyz`` saying why, instead of a crash
    loop, and it goes on by itself once the broker accepts.
    """
    delay, last = first_delay_s, None
    while not stopping.is_set():
        problem = await connection_problem(settings)
        if problem is None:
            if last is not None:
                log.info("kafka.accepted", bootstrap_servers=settings.kafka_bootstrap_servers)
            return True
        if problem != last:
            log.error("kafka.refused", problem=problem, retry_in_s=delay)
            last = problem
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        delay = min(max_delay_s, delay * 2)
    return False


CONNECTION_FIELDS = (
    "kafka_bootstrap_servers",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_sasl_password_file",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "kafka_ssl_key_password",
    "kafka_ssl_check_hostname",
    "kafka_oauth_token_provider",
    "kafka_oauth_token_url",
    "kafka_oauth_client_id",
    "kafka_oauth_client_secret",
    "kafka_oauth_scope",
)


def connection_env(settings: Settings) -> dict[str, str]:
    """The ``HOOKLANE_KAFKA_*`` connection variables of ``settings``, for child processes
    (unset ones as empty strings, which ``Settings.from_env`` reads as unset)."""
    env = {}
    for name in CONNECTION_FIELDS:
        value = getattr(settings, name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        env[PREFIX + name.upper()] = text
    return env
