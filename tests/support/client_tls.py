"""A test CA that issues client certificates, and an HTTPS receiver that requires them."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.receiver import Receiver
from tests.support.sender import Certificates, make_certificates


def pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass
class ClientCA:
    """A CA made in the test; ``issue`` gives a client (certificate, key) PEM pair."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls, name: str = "Receiver client CA") -> ClientCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str = "hooklane-sender", days: float = 1) -> tuple[str, str]:
        """A client certificate valid for ``days`` (negative: already expired) and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start = min(now, now + datetime.timedelta(days=days)) - datetime.timedelta(days=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key(key)


@dataclass
class MutualTLS:
    """Server certificates (``tests.support.sender``) and a client CA the receiver trusts."""

    server: Certificates
    clients: ClientCA

    @classmethod
    def make(cls, directory: Path) -> MutualTLS:
        return cls(make_certificates(directory), ClientCA.make())

    def trust(self) -> ssl.SSLContext:
        """The sender's verifying context: trusts the test server CA."""
        return self.server.client_context()

    def receiver_context(self) -> ssl.SSLContext:
        context = self.server.server_context(self.server.signed)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=self.clients.pem)
        return context


def mtls_receiver(tls: MutualTLS) -> Receiver:
    """An HTTPS receiver (``https://127.0.0.1:<port>/hook``) refusing clients without a
    certificate from ``tls.clients``; use it as ``async with mtls_receiver(tls) as rx``."""
    return Receiver(ssl_context=tls.receiver_context())
