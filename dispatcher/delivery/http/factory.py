"""``make_sender(settings)``: the production sender ``HOOKLANE_SENDER`` names.

Apart from both senders, because the lean one imports the seam's types from
``dispatcher.delivery.http.sender``.
"""

from __future__ import annotations

from dispatcher.delivery.http.lean import HttpSender
from dispatcher.delivery.http.sender import AiohttpSender, ClosableSender
from dispatcher.settings import Settings


def make_sender(settings: Settings) -> ClosableSender:
    """The sender ``HOOKLANE_SENDER`` names. Call inside a running loop."""
    if settings.sender == "aiohttp":
        return AiohttpSender(settings)
    return HttpSender(settings)
