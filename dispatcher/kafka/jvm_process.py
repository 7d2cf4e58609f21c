"""Running a Kafka JVM: its options, its logging, and watching its process.

Start-up options are tuned for small machines (``START_JVM_OPTIONS``); ``failure_cause``
reads why a JVM failed from its output; the ``/proc`` readers tell a stopped (frozen)
process and a process's memory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

# Fast start on small machines, at the cost of peak throughput: C1 only (no C2 warm-up
# competing with start-up on 2 cores), the serial collector (no GC threads), a small heap.
# Measured: a node answers metadata in 2.5-2.8 s of wall time after launch, against
# 4.3-5.1 s with only the serial collector, on an otherwise idle 2-core machine.
START_JVM_OPTIONS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
BROKER_HEAP: tuple[str, ...] = ("-Xms256m", "-Xmx512m")
TOOL_HEAP: tuple[str, ...] = ("-Xmx256m",)

# A single log4j2 file appender per node; the level is the ``log_level`` argument.
LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${{sys:kafka.logs.dir}}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
"""


# A Java throwable's first line, as printed by an uncaught exception or log4j's layout.
_THROWABLE = re.compile(
    r'^(?:Exception in thread "[^"]*" |Caused by: )?(?:[\w$]+\.)*([\w$]+(?:Exception|Error))'
    r"(?::\s*(.*))?$"
)


def failure_cause(lines: Sequence[str]) -> str:
    """One line saying why a JVM failed: its first exception, else its last error line."""
    for line in lines:
        match = _THROWABLE.match(line.strip())
        if match:
            name, message = match.groups()
            return f"{name}: {message}"[:500] if message else name
    errors = [line for line in lines if " ERROR " in line or " FATAL " in line]
    chosen = (errors or [line for line in lines if line.strip()] or ["no output"])[-1]
    return chosen.strip()[:500]


def process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat ("T": stopped by a signal), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def wait_state(pid: int, stopped: bool, timeout: float = 2.0) -> None:
    """Wait (a little) until every thread of ``pid`` is stopped; no-op without /proc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = process_state(pid)
        if state is None or (state in ("T", "t")) == stopped:
            return
        time.sleep(0.005)


def rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None
