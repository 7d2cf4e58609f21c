"""Why a delivery attempt failed.

::

    DeliveryError                 (retriable)
    ├── ConnectError              could not connect (refused, DNS failure, reset)
    ├── TLSError                  the TLS handshake or certificate failed
    ├── DeliveryTimeout           no complete answer within HOOKLANE_DELIVERY_TIMEOUT_S
    ├── ProtocolError             the answer was not valid HTTP
    └── BlockedDestination        (not retriable) the URL is or resolves to a forbidden address
"""

from __future__ import annotations

from typing import ClassVar


class DeliveryError(Exception):
    """An attempt failed before a complete HTTP answer; ``retriable`` says whether to retry."""

    retriable: ClassVar[bool] = True

    @property
    def error_class(self) -> str:
        """A short stable name recorded in the attempt log."""
        return type(self).__name__


class ConnectError(DeliveryError):
    """The receiver could not be reached."""


class TLSError(DeliveryError):
    """The TLS handshake or certificate check failed."""


class DeliveryTimeout(DeliveryError):
    """The receiver did not answer in time."""


class ProtocolError(DeliveryError):
    """The receiver answered with something that is not valid HTTP."""


class BlockedDestination(DeliveryError):
    """The destination is not allowed (SSRF protection); retrying cannot help."""

    retriable: ClassVar[bool] = False
