"""Children die with their parent: the embedded broker, `hooklane up`'s children and the
bench's are not left running when the process that started them is SIGKILLed (Linux)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.kafka.broker import tansu_binary
from dispatcher.parent_death import die_with_parent

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

BROKER_PARENT = """
import time
from dispatcher.kafka.broker import EmbeddedBroker

broker = EmbeddedBroker()
broker.start()
print("child-pid", broker.pid, flush=True)
time.sleep(120)
"""

# `hooklane up`'s own spawn, on its own event loop, with a child module that only sleeps.
SUPERVISOR_PARENT = """
import asyncio, os, sys
from dispatcher.runtime import event_loop
from dispatcher.runtime import supervisor

supervisor.METRICS_PORT_OFFSETS["sleeper"] = 0

async def main():
    env = {**os.environ, "HOOKLANE_METRICS_PORT": "0", "PYTHONPATH": sys.argv[1]}
    child = supervisor.Child("sleeper")
    await supervisor.Supervisor(env).spawn(child)
    print("child-pid", child.process.pid, flush=True)
    await asyncio.sleep(120)

event_loop.run(main(), "auto")
"""

# The bench's own spawn (router, deliverer, receiver), with a child module that only sleeps.
BENCH_PARENT = """
import asyncio, os, sys, tempfile
from pathlib import Path
from dispatcher.runtime import event_loop
from dispatcher.bench.procs import Child

async def main():
    child = Child("sleeper", "sleeper")
    env = {**os.environ, "PYTHONPATH": sys.argv[1]}
    await child.start(env, Path(tempfile.mkdtemp()))
    print("child-pid", child.pid, flush=True)
    await asyncio.sleep(120)

event_loop.run(main(), "auto")
"""


def _stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is [0])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def identity(pid: int) -> str | None:
    """The start time of running process ``pid`` (tells it from a later one with its
    pid); None once it has exited, zombies included."""
    fields = _stat(pid)
    if fields is None or fields[0] in {"Z", "X"}:
        return None
    return fields[19]


def children(parent: int) -> dict[int, str | None]:
    """The running children of ``parent``, by identity."""
    found: dict[int, str | None] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None and fields[1] == str(parent):
            found[int(entry.name)] = identity(int(entry.name))
    return found


def announced_pid(parent: subprocess.Popen[bytes], within_s: float = 30.0) -> int:
    """The pid in the parent's ``child-pid N`` line (its other output is logs)."""
    assert parent.stdout is not None
    deadline = time.monotonic() + within_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([parent.stdout], [], [], left)
        line = parent.stdout.readline() if ready else b""
        if not line:
            break
        if line.startswith(b"child-pid "):
            return int(line.split()[1])
    pytest.fail(f"the parent announced no child (exit code {parent.poll()})")


def assert_dies_with_parent(script: str, *args: str, program: str) -> None:
    """SIGKILL the parent that ``script`` runs; its child, running ``program``, follows it.

    Whatever happens, nothing the parent started is left running afterwards.
    """
    # Unbuffered: select() must not wait for a line already read into a buffer.
    parent = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, bufsize=0
    )
    started: dict[int, str | None] = {}
    try:
        child = announced_pid(parent)
        started = children(parent.pid)
        child_identity = started.get(child)
        assert child_identity is not None, f"{child} is not a running child of the parent"
        # The launcher exec'd the program in place: the pid the parent holds is its.
        assert os.path.realpath(f"/proc/{child}/exe") == os.path.realpath(program)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5.0
        while identity(child) == child_identity and time.monotonic() < deadline:
            time.sleep(0.05)
        assert identity(child) != child_identity, f"child {child} outlived its parent by 5 s"
    finally:
        if parent.poll() is None:
            started.update(children(parent.pid))
            parent.kill()
            parent.wait()
        for pid, born in started.items():
            if born is not None and identity(pid) == born:  # not a later process's pid
                os.kill(pid, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()


@linux_only
def test_broker_dies_when_its_parent_is_killed() -> None:
    """tansu exits within seconds of a SIGKILL to the process that started it."""
    assert_dies_with_parent(BROKER_PARENT, program=tansu_binary())


@linux_only
def test_supervised_child_dies_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """A child started by the supervisor's spawn exits when the supervisor is SIGKILLed."""
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(120)\n")
    assert_dies_with_parent(SUPERVISOR_PARENT, str(tmp_path), program=sys.executable)


@linux_only
def test_bench_child_dies_when_the_bench_is_killed(tmp_path: Path) -> None:
    """A router, deliverer or receiver the bench started exits when the bench is SIGKILLed."""
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(120)\n")
    assert_dies_with_parent(BENCH_PARENT, str(tmp_path), program=sys.executable)


@linux_only
def test_program_is_killed_when_the_parent_died_before_the_signal_was_armed() -> None:
    """A parent that is gone by the time the launcher runs (here: a wrong parent pid)
    means the program never starts: the launcher SIGKILLs itself instead."""
    argv = die_with_parent(["true"])
    argv[argv.index(str(os.getpid()))] = "1"
    assert subprocess.run(argv, timeout=30).returncode == -signal.SIGKILL


@linux_only
def test_launched_program_ignores_the_signals_a_popen_child_ignores() -> None:
    """The launcher is Python, which ignores SIGPIPE; the program must not inherit that."""

    def ignored(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout

    status = ["grep", "SigIgn", "/proc/self/status"]
    assert ignored(die_with_parent(status)) == ignored(status)


@linux_only
def test_a_program_that_cannot_run_exits_127() -> None:
    """A missing program is reported as a shell would (exit code 127, reason on stderr)."""
    result = subprocess.run(
        die_with_parent(["/nonexistent/tansu"]), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 127
    assert "cannot run /nonexistent/tansu" in result.stderr


def test_argv_is_unchanged_elsewhere_than_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PR_SET_PDEATHSIG the command runs as given."""
    monkeypatch.setattr(sys, "platform", "darwin")
    assert die_with_parent(["tansu", "broker"]) == ["tansu", "broker"]
