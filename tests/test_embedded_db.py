"""The reason line of a failed embedded Postgres start, picked from the tools' output."""

from __future__ import annotations

import pytest

from dispatcher.runtime.embedded_db import failure_reason


@pytest.mark.parametrize(
    ("lines", "fallback", "reason"),
    [
        (
            [
                "Failed postgres command ['initdb', ...]",
                "stderr:",
                'initdb: error: could not write to file "pg_wal/xlogtemp.16": '
                "No space left on device",
            ],
            "exit status 1",
            'could not write to file "pg_wal/xlogtemp.16": No space left on device',
        ),
        (
            [
                "pg_ctl: could not start server",
                '02:55:01.123 UTC [12] FATAL:  lock file "postmaster.pid" already exists',
                "2026-12-02 02:55:01.124 UTC [12] ERROR:  ignored",
            ],
            "exit status 1",
            'lock file "postmaster.pid" already exists',
        ),
        (
            [],
            "Command 'pg_ctl' timed out\n after 10 seconds",
            "Command 'pg_ctl' timed out after 10 seconds",
        ),
        ([], "", "unknown error"),
    ],
)
def test_failure_reason(lines: list[str], fallback: str, reason: str) -> None:
    """FATAL lines win over `error:` lines, which win over the exception's own text."""
    assert failure_reason(lines, fallback) == reason
