"""Throwaway X.509 certificates for loopback TLS: the bench's HTTPS receiver, and the
test CAs of ``tests/support`` (server and client certificates). P-256 keys, SHA-256."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey
LOOPBACK = x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))


def new_key() -> Key:
    """A fresh P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def common_name(name: str) -> x509.Name:
    """The distinguished name ``CN=name``."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def issue(
    subject: str,
    key: Key,
    *,
    issuer: tuple[x509.Name, Key] | None = None,
    ca: bool = False,
    names: Sequence[x509.GeneralName] = (),
    client: bool = False,
    days: float = 1,
) -> x509.Certificate:
    """A certificate for ``key``, signed by ``issuer`` (name, key) or self-signed.

    ``ca``: may sign others; ``names``: its subject alternative names; ``client``: for
    client authentication; valid for ``days`` from now (negative: already expired).
    """
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=days)
    issuer_name, issuer_key = issuer if issuer is not None else (common_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(common_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, not_after) - datetime.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if client:
        usages = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        builder = builder.add_extension(usages, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    """The certificate in PEM."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pem_key(key: Key) -> str:
    """The private key in unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def self_signed(name: str, *, loopback: bool = False) -> tuple[str, str]:
    """A self-signed certificate (its own CA; for 127.0.0.1 with ``loopback``) and key, PEM."""
    key = new_key()
    cert = issue(name, key, ca=True, names=[LOOPBACK] if loopback else ())
    return pem(cert), pem_key(key)
