"""A test CA that issues client certificates, and an HTTPS receiver that requires them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from dispatcher.bench.certificates import Key, issue, new_key, pem, pem_key
from tests.support.receiver import Receiver
from tests.support.sender import Certificates, make_certificates


@dataclass
class ClientCA:
    """A CA made in the test; ``issue`` gives a client (certificate, key) PEM pair."""

    cert: x509.Certificate
    key: Key

    @classmethod
    def make(cls, name: str = "Receiver client CA") -> ClientCA:
        key = new_key()
        return cls(issue(name, key, ca=True), key)

    @property
    def pem(self) -> str:
        return pem(self.cert)

    def issue(self, common_name: str = "hooklane-sender", days: float = 1) -> tuple[str, str]:
        """A client certificate valid for ``days`` (negative: already expired) and its key."""
        key = new_key()
        issuer = (self.cert.subject, self.key)
        cert = issue(common_name, key, issuer=issuer, client=True, days=days)
        return pem(cert), pem_key(key)


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
