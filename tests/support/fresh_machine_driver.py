"""Runs inside a fresh network + pid namespace (see tests/test_fresh_machine.py).

Nothing listens on 127.0.0.1:5432 there, so ``hooklane up`` must fall back to the
embedded Postgres. As pid 1 of the namespace this script sees every process in it,
so "no process left" is exact. Scenarios, each in its own working directory like a
fresh clone (``.venv`` is a link to the test's virtualenv):

1. ``full_disk``: ``.hooklane`` is a 1 MiB tmpfs, so the fallback cannot start.
2. ``walkthrough``: the README's own commands (stack, receiver, curl + publish).
3. ``restart``: a second start in the same directory finds the webhook; a third,
   concurrent one is refused and leaves the second's database alone.
4. ``stale_lock``: a postmaster.pid naming a live non-Postgres pid.

Prints one JSON object with what each scenario observed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.readme_walkthrough import banner_value, fill_in, load

BANNER_END = "Press Ctrl-C to stop."
UP = [".venv/bin/hooklane", "up"]


def fresh_checkout(path: Path) -> Path:
    """A working directory that looks like a clone after `make install`."""
    path.mkdir(parents=True)
    (path / ".venv").symlink_to(sys.prefix)
    return path


def start(
    command: str | list[str], cwd: Path, name: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """A process in its own session, like a command typed into a new terminal."""
    out = (cwd / f"{name}.out").open("wb")
    err = (cwd / f"{name}.err").open("wb")
    # `trap : INT`: like an interactive shell, sh survives Ctrl-C and exits with the
    # command's status, so that status is the command's own.
    args = ["sh", "-c", f"trap : INT\n{command}"] if isinstance(command, str) else command
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)


def wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes], within_s: float) -> str:
    """The content of ``path`` once it contains ``text``; raises on exit or timeout."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        content = path.read_text("utf-8", "replace")
        if text in content:
            return content
        if process.poll() is not None:
            raise RuntimeError(f"{path.name}: exited with {process.returncode} before {text!r}")
        time.sleep(0.2)
    raise RuntimeError(f"{path.name}: no {text!r} within {within_s}s")


def wait_for_port(port: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} within {within_s}s")


def ctrl_c(process: subprocess.Popen[bytes], within_s: float = 60.0) -> int | None:
    """SIGINT the process group (what Ctrl-C in its terminal does); its exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(within_s)
    except subprocess.TimeoutExpired:
        return None


def other_processes() -> list[str]:
    """Every live process of the namespace but this one (zombies reaped first)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            found.append(f"{entry.name}: {cmdline}")
    return found


def settle() -> list[str]:
    """The processes still alive a few seconds after a stop (postgres exits in steps)."""
    deadline = time.monotonic() + 10
    while (left := other_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])


def failed_start(cwd: Path, env: dict[str, str], alone: bool = True) -> dict[str, Any]:
    """Run `hooklane up` expecting it to fail; its exit code, stderr, what it left."""
    done = subprocess.run(UP, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)
    return {"code": done.returncode, "stderr": done.stderr, "left": settle() if alone else None}


def full_disk(root: Path, env: dict[str, str]) -> dict[str, Any]:
    cwd = fresh_checkout(root / "full")
    (cwd / ".hooklane").mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", ".hooklane"]
    subprocess.run(mount, cwd=cwd, check=True)
    try:
        return failed_start(cwd, env)
    finally:
        subprocess.run(["umount", ".hooklane"], cwd=cwd, check=False)


def list_webhooks(api: str, key: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(api + "/webhooks", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        data: list[dict[str, Any]] = json.load(response)["data"]
        return data


def with_stack(
    command: str | list[str],
    cwd: Path,
    name: str,
    env: dict[str, str],
    body: Callable[[str, dict[str, Any]], None],
) -> dict[str, Any]:
    """Start a stack, run ``body(banner, result)``, Ctrl-C it; what was observed."""
    result: dict[str, Any] = {}
    stack = start(command, cwd, name, env)
    try:
        result["banner"] = wait_for_text(cwd / f"{name}.out", BANNER_END, stack, 120)
        body(result["banner"], result)
    except (RuntimeError, OSError) as exc:
        result["error"] = str(exc)
    finally:
        result["stop_code"] = ctrl_c(stack)
        result["left"] = settle()
        result["stderr_tail"] = tail(cwd / f"{name}.err")
    return result


def walkthrough(cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    steps = load()

    def body(banner: str, result: dict[str, Any]) -> None:
        key, kafka = banner_value(banner, "Dev API key"), banner_value(banner, "Kafka")
        result["api_key"] = key
        receiver = start(steps.receiver, cwd, "receiver", env)
        try:
            wait_for_port(9911, 30)
            client = subprocess.run(
                ["sh", "-c", fill_in(steps.client, key, kafka)],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            result["client"] = {
                "code": client.returncode,
                "stdout": client.stdout,
                "stderr": client.stderr,
            }
            result["received"] = wait_for_text(cwd / "receiver.out", "\n", receiver, 60)
        finally:
            ctrl_c(receiver, 10)

    return with_stack(steps.stack, cwd, "stack", env, body)


def restart(cwd: Path, env: dict[str, str], first_key: str | None) -> dict[str, Any]:
    def body(banner: str, result: dict[str, Any]) -> None:
        api = banner_value(banner, "API")
        result["second_up"] = failed_start(cwd, env, alone=False)
        # after the second one gave up, the first still has its database
        result["webhooks_new_key"] = list_webhooks(api, banner_value(banner, "Dev API key"))
        if first_key:
            result["webhooks_first_key"] = list_webhooks(api, first_key)

    private = {**env, "HOOKLANE_ALLOW_PRIVATE_TARGETS": "true"}
    return with_stack(UP, cwd, "restart", private, body)


def stale_lock(cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    lock = cwd / ".hooklane" / "pgdata" / "postmaster.pid"
    # The shape Postgres writes; pid 1 is this script: alive, and not Postgres.
    pgdata = lock.parent.resolve()
    lock.write_text(f"1\n{pgdata}\n{int(time.time())}\n5432\n{pgdata}\n\n0 0\nready\n")
    try:
        return failed_start(cwd, env)
    finally:
        lock.unlink()


def main() -> None:
    root = Path(sys.argv[1])
    # A new user's shell: no Hooklane settings, this checkout's code first.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLANE_")}
    env["HOOKLANE_LOG_FORMAT"] = "json"
    # The tansu fall-back of `make run` (no Java here is the newcomer it serves);
    # test_embedded_kafka_stack runs `hooklane up` on Apache Kafka.
    env["HOOKLANE_EMBEDDED_BROKER"] = "tansu"
    result: dict[str, Any] = {"before": other_processes()}
    result["full_disk"] = full_disk(root, env)
    machine = fresh_checkout(root / "machine")
    result["walkthrough"] = walkthrough(machine, env)
    result["restart"] = restart(machine, env, result["walkthrough"].get("api_key"))
    result["stale_lock"] = stale_lock(machine, env)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
