"""A webhook's own request headers (DESIGN.md §11 ``headers``): the rules they obey.

Pure: ``header_problems`` says what is wrong with a tenant's ``headers`` object, one
problem per header, naming it, so the API answers 422 with the name in the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_HEADERS = 20
MAX_NAME = 256
MAX_VALUE = 1024
# Set by Hooklane itself on every delivery (or by HTTP), so never the tenant's to send.
RESERVED = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "commenda-x-secret",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "traceparent",
        "tracestate",
    }
)
# Reserved only when the webhook has ``auth`` (it sends its own Authorization).
AUTH_HEADER = "authorization"
# RFC 9110 token characters; values are printable ASCII (space to tilde).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def header_problems(headers: Mapping[str, object], *, has_auth: bool) -> list[tuple[str, str]]:
    """``(name, message)`` for each unacceptable header; empty when all may be sent."""
    if len(headers) > MAX_HEADERS:
        return [("", f"at most {MAX_HEADERS} headers, not {len(headers)}")]
    problems = []
    for name, value in headers.items():
        lowered = name.lower()
        if len(name) > MAX_NAME or not _TOKEN.fullmatch(name):
            problems.append((name, f"header name {name!r} is not an HTTP token"))
        elif lowered in RESERVED:
            problems.append((name, f"header {name!r} is reserved: Hooklane sets it itself"))
        elif lowered == AUTH_HEADER and has_auth:
            problems.append((name, f"header {name!r} is reserved: this webhook's auth sets it"))
        elif not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
            problems.append((name, f"header {name!r}: the value must be printable ASCII"))
        elif len(value) > MAX_VALUE:
            problems.append((name, f"header {name!r}: the value exceeds {MAX_VALUE} characters"))
    return problems
