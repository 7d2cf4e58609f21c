"""Logging survives the stream it was configured with being replaced and closed."""

from __future__ import annotations

import io
import logging
import sys

import structlog

from dispatcher.logs import configure_logging
from dispatcher.settings import Settings


def test_a_closed_stderr_of_the_past_does_not_break_logging(monkeypatch) -> None:
    """Configured while stderr was one stream, logging writes to today's stderr."""
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(Settings(log_format="json", log_level="INFO"))
    first.close()  # e.g. pytest's capture of an earlier test
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger("t").info("after", n=1)
    logging.getLogger("lib").warning("stdlib after")
    written = second.getvalue()
    assert '"event":"after"' in written
    assert "stdlib after" in written
