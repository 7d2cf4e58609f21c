"""Log output: structlog's own lines and the libraries' stdlib records share one format."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
import structlog

from dispatcher.logs import configure_logging
from dispatcher.settings import Settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_a_library_traceback_is_one_json_line(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(Settings(log_format="json", log_level="INFO"))
    structlog.get_logger("hooklane").warning("ours.event", answer=42)
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError:
        logging.getLogger("asyncpg.pool").exception("Failed to restore the pool connection floor")
    logging.getLogger("aiokafka").info("below WARNING: not written")
    sys.stderr.flush()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    ours, theirs = (orjson.loads(line) for line in lines)
    assert ours["event"] == "ours.event" and ours["answer"] == 42 and ours["level"] == "warning"
    assert theirs["event"] == "Failed to restore the pool connection floor"
    assert theirs["level"] == "error" and theirs["logger"] == "asyncpg.pool"
    assert "ConnectionRefusedError" in theirs["exception"]
    assert "timestamp" in theirs
