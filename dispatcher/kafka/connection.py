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

import ssl
from pathlib import Path
from typing import Any

from dispatcher.kafka.oauth import token_provider
from dispatcher.settings import PREFIX, Settings


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
