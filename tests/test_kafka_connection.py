"""The one builder of Kafka connection options and the validation of its settings (§10).

No broker here: tests/test_kafka_security.py connects to Apache Kafka with them.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from dispatcher.kafka.connection import (
    KafkaConnectionSettingsError,
    client_options,
    connection_env,
)
from dispatcher.kafka.oauth import CallableTokens, ClientCredentials, msk_region
from dispatcher.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = {"HOOKLANE_KAFKA_BOOTSTRAP_SERVERS": "kafka:9093"}


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A CA file, a client certificate and its key (separately and in one file)."""
    directory = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    client = ca.issue_cert("hooklane-client")
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "client.pem",
        "key": directory / "client.key",
        "both": directory / "client-and-key.pem",
        "password": directory / "password",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["both"]))
    paths["password"].write_text("from-a-file\n")
    yield {name: str(path) for name, path in paths.items()}


def env(**values: str) -> dict[str, str]:
    return BOOTSTRAP | {f"HOOKLANE_KAFKA_{k.upper()}": v for k, v in values.items()}


# -- validation: each inconsistent combination, one line naming what to set -------------

REFUSED = [
    ({"security_protocol": "TLS"}, "SECURITY_PROTOCOL=TLS: must be PLAINTEXT, SSL"),
    (
        {"security_protocol": "SASL_SSL"},
        "SECURITY_PROTOCOL=SASL_SSL needs HOOKLANE_KAFKA_SASL_MECHANISM",
    ),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"},
        "SASL_MECHANISM=GSSAPI: must be PLAIN, SCRAM-SHA-256",
    ),
    (
        {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
        "SASL_MECHANISM is set: set HOOKLANE_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
    ),
    ({"sasl_username": "u"}, "SASL_USERNAME is set: set HOOKLANE_KAFKA_SECURITY_PROTOCOL"),
    (
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "ssl_cafile": "{ca}"},
        "SSL_CAFILE is set: set HOOKLANE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL",
    ),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
        "SASL_MECHANISM=SCRAM-SHA-512 needs HOOKLANE_KAFKA_SASL_USERNAME",
    ),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
        "needs HOOKLANE_KAFKA_SASL_PASSWORD or HOOKLANE_KAFKA_SASL_PASSWORD_FILE",
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password": "p",
            "sasl_password_file": "{password}",
        },
        "SASL_PASSWORD and HOOKLANE_KAFKA_SASL_PASSWORD_FILE are both set: keep one",
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password_file": "/nonexistent/password",
        },
        "SASL_PASSWORD_FILE=/nonexistent/password: no such file",
    ),
    ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "no such file"),
    ({"security_protocol": "SSL", "ssl_keyfile": "{key}"}, "SSL_KEYFILE needs"),
    ({"security_protocol": "SSL", "ssl_key_password": "k"}, "SSL_KEY_PASSWORD needs"),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
        "SASL_MECHANISM=OAUTHBEARER needs HOOKLANE_KAFKA_OAUTH_TOKEN_PROVIDER",
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "oauth_token_provider": "client_credentials",
            "oauth_token_url": "https://idp/token",
            "oauth_client_id": "id",
        },
        "client_credentials needs HOOKLANE_KAFKA_OAUTH_CLIENT_SECRET",
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "oauth_token_provider": "client_credentials",
            "oauth_token_url": "idp/token",
            "oauth_client_id": "id",
            "oauth_client_secret": "s",
        },
        "OAUTH_TOKEN_URL=idp/token: must be an http(s) URL",
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "oauth_token_provider": "kerberos",
        },
        "must be client_credentials, aws_msk_iam or module:callable",
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "oauth_token_provider": "aws_msk_iam",
            "sasl_username": "u",
        },
        "SASL_USERNAME/PASSWORD are not used with OAUTHBEARER",
    ),
    (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password": "p",
            "oauth_token_url": "https://idp/token",
        },
        "OAUTH_TOKEN_URL is set: it is for HOOKLANE_KAFKA_SASL_MECHANISM=OAUTHBEARER",
    ),
]


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_inconsistent_settings_are_refused_with_one_line(
    values: dict[str, str], message: str, pem: dict[str, str]
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env(**{k: v.format(**pem) for k, v in values.items()}))
    text = str(refused.value)
    assert message in text
    assert "\n" not in text
    for secret in ("sasl_password", "ssl_key_password", "oauth_client_secret"):
        if secret in values:
            assert not re.search(rf"={re.escape(values[secret])}\b", text)


# -- the builder: what each accepted combination gives aiokafka --------------------------


def test_plaintext_is_the_default_and_needs_only_the_servers() -> None:
    options = client_options(Settings.from_env(BOOTSTRAP))
    assert options == {"bootstrap_servers": "kafka:9093", "security_protocol": "PLAINTEXT"}
    with pytest.raises(KafkaConnectionSettingsError, match="KAFKA_BOOTSTRAP_SERVERS"):
        client_options(Settings())


@pytest.mark.parametrize(
    ("protocol", "mechanism", "tls"),
    [
        ("SASL_SSL", "SCRAM-SHA-512", True),
        ("SASL_SSL", "SCRAM-SHA-256", True),
        ("SASL_PLAINTEXT", "PLAIN", False),
        ("sasl_ssl", "plain", True),  # case does not matter
    ],
)
def test_sasl_with_a_password(protocol: str, mechanism: str, tls: bool) -> None:
    settings = Settings.from_env(
        env(
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username="alice",
            sasl_password=" spaced secret ",
        )
    )
    options = client_options(settings)
    assert options["security_protocol"] == protocol.upper()
    assert options["sasl_mechanism"] == mechanism.upper()
    assert options["sasl_plain_username"] == "alice"
    assert options["sasl_plain_password"] == " spaced secret "  # taken as written
    assert isinstance(options.get("ssl_context"), ssl.SSLContext) is tls


def test_the_password_file_is_read_for_every_new_client(
    pem: dict[str, str], tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text("first\n")
    settings = Settings.from_env(
        env(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="alice",
            sasl_password_file=str(password),
        )
    )
    assert client_options(settings)["sasl_plain_password"] == "first"
    password.write_text("rotated")  # a Kubernetes Secret updated in place
    assert client_options(settings)["sasl_plain_password"] == "rotated"


@pytest.mark.parametrize("separate_key", [True, False])
def test_ssl_with_a_ca_and_a_client_certificate(pem: dict[str, str], separate_key: bool) -> None:
    files = {"ssl_certfile": pem["cert"], "ssl_keyfile": pem["key"]}
    if not separate_key:
        files = {"ssl_certfile": pem["both"]}
    settings = Settings.from_env(env(security_protocol="SSL", ssl_cafile=pem["ca"], **files))
    context = client_options(settings)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert "sasl_mechanism" not in client_options(settings)
    issuers = [dict(item[0] for item in c["issuer"]) for c in context.get_ca_certs()]
    assert any("trustme" in str(issuer) for issuer in issuers)


def test_hostname_checking_can_be_turned_off_but_certificates_are_still_verified(
    pem: dict[str, str],
) -> None:
    settings = Settings.from_env(
        env(security_protocol="SSL", ssl_cafile=pem["ca"], ssl_check_hostname="false")
    )
    context = client_options(settings)["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_oauthbearer_gets_a_token_provider() -> None:
    settings = Settings.from_env(
        env(
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            oauth_token_provider="client_credentials",
            oauth_token_url="https://idp.example/oauth2/token",
            oauth_client_id="hooklane",
            oauth_client_secret="very-secret",
            oauth_scope="kafka",
        )
    )
    provider = client_options(settings)["sasl_oauth_token_provider"]
    assert isinstance(provider, ClientCredentials)
    assert "very-secret" not in repr(provider)
    assert "very-secret" not in repr(settings)

    custom = settings.replace(
        kafka_oauth_token_provider="tests.test_kafka_connection:static_token",
        kafka_oauth_token_url=None,
        kafka_oauth_client_id=None,
        kafka_oauth_client_secret=None,
        kafka_oauth_scope=None,
    )
    assert isinstance(client_options(custom)["sasl_oauth_token_provider"], CallableTokens)


def static_token() -> str:
    return "a-token"


async def test_a_module_callable_provider_gives_its_token() -> None:
    settings = Settings.from_env(
        env(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="OAUTHBEARER",
            oauth_token_provider="tests.test_kafka_connection:static_token",
        )
    )
    assert await client_options(settings)["sasl_oauth_token_provider"].token() == "a-token"


@pytest.mark.parametrize(
    ("servers", "region"),
    [
        ("b-1.orders.abc123.c2.kafka.eu-west-1.amazonaws.com:9098", "eu-west-1"),
        ("x:1,boot-xyz.c1.kafka-serverless.us-east-2.amazonaws.com:9098", "us-east-2"),
        ("kafka:9093", None),
    ],
)
def test_the_msk_region_comes_from_the_broker_names(servers: str, region: str | None) -> None:
    if region is None:
        with pytest.raises(RuntimeError, match="no AWS region"):
            msk_region(servers)
    else:
        assert msk_region(servers) == region


def test_secrets_are_not_in_repr_and_children_get_every_connection_setting(
    pem: dict[str, str],
) -> None:
    settings = Settings.from_env(
        env(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="alice",
            sasl_password="hunter2-secret",
            ssl_cafile=pem["ca"],
            ssl_certfile=pem["cert"],
            ssl_keyfile=pem["key"],
            ssl_key_password="key-secret",
            ssl_check_hostname="false",
        )
    )
    assert "hunter2-secret" not in repr(settings)
    assert "key-secret" not in repr(settings)
    child = Settings.from_env(connection_env(settings))
    assert child == settings


def test_no_kafka_client_is_built_without_the_builder() -> None:
    """Every aiokafka client in dispatcher/ and api/ takes ``client_options(...)``."""
    constructor = re.compile(r"AIOKafka(?:Consumer|Producer|AdminClient)\(")
    found = []
    for path in [*REPO.glob("dispatcher/**/*.py"), *REPO.glob("api/**/*.py")]:
        text = path.read_text()
        for match in constructor.finditer(text):
            call = text[match.end() : match.end() + 200]
            found.append(path.name)
            assert "client_options(" in call, f"{path}: a Kafka client without client_options"
    assert len(found) >= 7, found
