"""A webhook's TLS client certificate (DESIGN.md §11 ``tls_client_certificate``).

``check_client_certificate`` is the registration check (the PEM pair parses, the key
matches the certificate, the certificate has not expired; the clock is passed in);
``client_context`` loads the pair into an ``ssl.SSLContext`` without writing the key to
disk (a memfd where Linux has one). The senders cache one context per certificate
(``dispatcher.delivery.http.client_tls``).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

MAX_PEM = 64 * 1024


class InvalidCertificate(ValueError):
    """The PEM pair cannot be presented: the message says why."""


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A checked PEM certificate (chain) and its private key, with what reads show."""

    certificate: str = field(repr=False)
    private_key: str = field(repr=False)
    subject: str
    not_after: datetime
    fingerprint_sha256: str

    def summary(self) -> dict[str, str]:
        """What reads show: never the key."""
        return {
            "subject": self.subject,
            "not_after": self.not_after.isoformat().replace("+00:00", "Z"),
            "fingerprint_sha256": self.fingerprint_sha256,
        }

    def bundle(self) -> str:
        """The PEM pair as one string, to be stored encrypted."""
        return orjson.dumps(
            {"certificate": self.certificate, "private_key": self.private_key}
        ).decode()

    @classmethod
    def from_bundle(cls, bundle: str, shown: dict[str, Any]) -> ClientCertificate:
        """The stored pair (``bundle``, decrypted) with its stored summary."""
        pems = orjson.loads(bundle)
        return cls(
            pems["certificate"],
            pems["private_key"],
            shown["subject"],
            datetime.fromisoformat(shown["not_after"]),
            shown["fingerprint_sha256"],
        )


def check_client_certificate(
    certificate: str, private_key: str, now: datetime
) -> ClientCertificate:
    """The pair, checked; InvalidCertificate saying what is wrong otherwise."""
    if len(certificate) > MAX_PEM or len(private_key) > MAX_PEM:
        raise InvalidCertificate(f"each PEM must be at most {MAX_PEM} characters")
    try:
        chain = x509.load_pem_x509_certificates(certificate.encode())
    except ValueError:
        raise InvalidCertificate("certificate: not a PEM X.509 certificate") from None
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except TypeError:
        raise InvalidCertificate("private_key: must not be encrypted with a password") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCertificate("private_key: not a PEM private key") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise InvalidCertificate("the private key does not match the certificate")
    not_after = leaf.not_valid_after_utc
    if not_after <= now:
        raise InvalidCertificate(f"the certificate expired at {not_after.isoformat()}")
    return ClientCertificate(
        certificate,
        private_key,
        leaf.subject.rfc4514_string(),
        not_after,
        leaf.fingerprint(hashes.SHA256()).hex(),
    )


@contextlib.contextmanager
def _in_memory_file(text: str) -> Iterator[str]:
    """A path to ``text`` that never reaches a disk where the OS allows (memfd)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("hooklane-client-certificate", os.MFD_CLOEXEC)
        try:
            os.write(fd, text.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as folder:  # private (0700), removed at once
        path = os.path.join(folder, "pair.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(text)
        yield path


def client_context(
    certificate: ClientCertificate, base: Callable[[], ssl.SSLContext] = ssl.create_default_context
) -> ssl.SSLContext:
    """A verifying context from ``base`` that presents ``certificate`` when asked."""
    context = base()
    with _in_memory_file(f"{certificate.certificate}\n{certificate.private_key}\n") as path:
        context.load_cert_chain(path)
    return context
