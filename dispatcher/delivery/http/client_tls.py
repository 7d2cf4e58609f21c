"""The senders' cache of TLS contexts that present a webhook's client certificate.

Building a context (trust store, key loading) costs milliseconds, so each certificate
gets one, made on its first delivery and kept while in use (least recently used
evicted past ``MAX_CONTEXTS``). A webhook whose certificate changes carries a new
``ClientCertificate`` (the target cache reloads it), hence a new context.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from collections.abc import Callable

from dispatcher.delivery.client_certificate import ClientCertificate, client_context

MAX_CONTEXTS = 1024


class ClientContexts:
    """``ClientCertificate`` -> ``ssl.SSLContext`` presenting it, built with ``base``."""

    def __init__(self, base: Callable[[], ssl.SSLContext] = ssl.create_default_context) -> None:
        self._base = base
        self._contexts: OrderedDict[ClientCertificate, ssl.SSLContext] = OrderedDict()

    def get(self, certificate: ClientCertificate) -> ssl.SSLContext:
        """The context presenting ``certificate`` (made on first use)."""
        context = self._contexts.get(certificate)
        if context is None:
            context = self._contexts[certificate] = client_context(certificate, self._base)
            if len(self._contexts) > MAX_CONTEXTS:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(certificate)
        return context
