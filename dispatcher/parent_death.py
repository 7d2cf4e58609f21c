"""Child processes that die with their parent: Linux's parent-death signal, set before exec.

Hooklane starts its long-lived children (the embedded broker; the API, router and
deliverer under ``hooklane up``) in a session of their own, so that Ctrl-C in a terminal
reaches only the supervisor, which stops them in order. The price: when the parent is
SIGKILLed nothing stops them, and they run on as orphans (tansu holding its port and
memory, the API holding the API port, so the next ``hooklane up`` cannot bind it).
``die_with_parent(argv)`` is the command line that runs ``argv`` with
``prctl(PR_SET_PDEATHSIG, SIGKILL)`` set: the kernel kills the child as its parent dies,
however it dies.

Why a launcher rather than ``Popen(preexec_fn=...)``: preexec_fn runs Python in the forked
child before exec, which the subprocess documentation calls unsafe when the parent has
threads, and Hooklane's parents have them when they spawn (measured on Python 3.11:
asyncio's child watcher adds a thread per child, so the supervisor's second child is
forked beside one; uvloop resolves names on 4 native threads; the bench starts its
broker from ``asyncio.to_thread``). Here the child execs this file at once in a fresh
interpreter (``python -I -S``: no site, no PYTHONPATH, no script directory on the path;
about 10 ms), which arms the signal and execs ``argv`` in the same process: the pid the
caller sees is the program's, and the signal survives the exec (Linux clears it only
for set-user-ID, set-group-ID or file-capability programs).

The signal follows the *thread* that forked, not the process: spawn from a thread that
lives as long as the child should (the main thread, which runs the event loop in every
Hooklane process; a thread pool's worker lives until the pool shuts down).

Elsewhere than on Linux ``die_with_parent`` returns ``argv`` unchanged.
"""

from __future__ import annotations

# Only the standard library: this file also runs as the launcher, without site-packages.
import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# What Python sets to SIG_IGN at start-up. exec keeps ignored signals ignored, so the
# launcher restores them as Popen (restore_signals=True) does for what it execs.
_IGNORED_BY_PYTHON = ("SIGPIPE", "SIGXFZ", "SIGXFSZ")


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that the process it starts is SIGKILLed when this one dies."""
    if sys.platform != "linux":
        return list(argv)
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), *argv]


def _launch(parent: int, argv: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        # A program that may outlive its parent beats a program that does not start.
        error = os.strerror(ctypes.get_errno())
        print(f"prctl(PR_SET_PDEATHSIG) failed ({error}); running without it", file=sys.stderr)
    elif os.getppid() != parent:
        # The parent died between fork and prctl, before the signal was armed.
        os.kill(os.getpid(), signal.SIGKILL)
    for name in _IGNORED_BY_PYTHON:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)  # searches PATH like Popen
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc}", file=sys.stderr)
        os._exit(127)


if __name__ == "__main__":
    _launch(int(sys.argv[1]), sys.argv[2:])
