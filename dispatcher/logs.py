"""structlog, configured once per process: console in a terminal, JSON otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import orjson
import structlog

from dispatcher.settings import Settings


class CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of each write.

    Bound to the stream object of the moment, a logger outlives it where the caller
    swaps it (pytest's capture per test, an embedding application): every later log
    line then raised "I/O operation on closed file", killing the task that logged.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging to stderr in the chosen format."""
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        renderer: structlog.types.Processor = structlog.processors.JSONRenderer(
            serializer=lambda obj, **_: orjson.dumps(obj, default=str).decode()
        )
        shared.append(structlog.processors.format_exc_info)
    else:
        # Plain tracebacks: rich's would print frame locals, which may hold secrets.
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    # The libraries' stdlib records (asyncpg's pool, aiokafka, aiohttp) in the same
    # format: one JSON line each, traceback included, instead of bare multi-line text
    # between the JSON lines.
    handler: logging.StreamHandler[CurrentStderr] = logging.StreamHandler(CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))
