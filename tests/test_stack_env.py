"""`.hooklane/env`: commands run beside `hooklane up` find the stack without copying
addresses from the banner (the environment still wins)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import WebhookVerificationError

from dispatcher.kafka.broker import free_port
from dispatcher.settings import ENV_FILE, Settings, read_env_file, with_env_file, write_env_file
from tests.conftest import migrated_database
from tests.support.pipeline import wait_until
from tests.support.readme_walkthrough import _FENCE as FENCE
from tests.support.readme_walkthrough import ROOT, banner_value, section

HOOKLANE = [sys.executable, "-m", "dispatcher.cli"]
BANNER_WITHIN_S = 120.0


def bare_env() -> dict[str, str]:
    """This process's environment without a single ``HOOKLANE_*`` variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HOOKLANE_")}


@pytest.mark.parametrize(
    ("file_text", "environ", "expected"),
    [
        ("HOOKLANE_API_PORT=9000\n", {}, {"HOOKLANE_API_PORT": "9000"}),
        # the environment wins over the file
        ("HOOKLANE_API_PORT=9000\n", {"HOOKLANE_API_PORT": "1"}, {"HOOKLANE_API_PORT": "1"}),
        # comments, blank lines and other variables are ignored
        ("# note\n\nPATH=/x\nHOOKLANE_TOPIC_PREFIX = a.\n", {}, {"HOOKLANE_TOPIC_PREFIX": "a."}),
        (None, {"HOOKLANE_API_PORT": "2"}, {"HOOKLANE_API_PORT": "2"}),  # no file: no change
    ],
)
def test_env_file_fills_in_what_the_environment_lacks(
    tmp_path: Path, file_text: str | None, environ: dict[str, str], expected: dict[str, str]
) -> None:
    """Values come from the file only where the environment sets nothing."""
    path = tmp_path / "env"
    if file_text is not None:
        path.write_text(file_text)
    assert dict(with_env_file(environ, path)) == expected


def test_env_file_round_trips_and_is_private(tmp_path: Path) -> None:
    """What `hooklane up` writes reads back as the same settings; only the owner reads it."""
    path = tmp_path / ".hooklane" / "env"
    values = {"HOOKLANE_API_PORT": "8123", "HOOKLANE_DATABASE_URL": "postgresql://u@h:1/db"}
    write_env_file(path, values)
    assert read_env_file(path) == values
    assert path.stat().st_mode & 0o077 == 0
    settings = Settings.from_env({}, env_file=path)
    assert (settings.api_port, settings.database_url) == (8123, "postgresql://u@h:1/db")


@dataclass
class DevStack:
    """A running `hooklane up` and the directory (the "checkout") it runs in."""

    checkout: Path
    api_port: int
    banner: str


class _Lines:
    """Collects a process's output lines on a thread (readline would block the test)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, process: subprocess.Popen[str]) -> str:
        deadline = time.monotonic() + BANNER_WITHIN_S
        while time.monotonic() < deadline and process.poll() is None:
            joined = "".join(self.lines)
            if text in joined:
                return joined
            time.sleep(0.1)
        raise AssertionError(f"`hooklane up` printed no {text!r}:\n{''.join(self.lines)}")


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """`hooklane up` as `make run` starts it: embedded broker, its own database."""
    checkout = tmp_path_factory.mktemp("checkout")
    api_port = free_port()
    with migrated_database("up") as database_url:
        env = {
            **bare_env(),
            "HOOKLANE_DATABASE_URL": database_url,
            "HOOKLANE_API_PORT": str(api_port),
            "HOOKLANE_METRICS_PORT": str(free_port()),
            "HOOKLANE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLANE_LOG_LEVEL": "WARNING",
            # CI keeps the tansu fall-back of `make run` tested; test_embedded_kafka_stack
            # runs the stack on Apache Kafka.
            "HOOKLANE_EMBEDDED_BROKER": "tansu",
        }
        process = subprocess.Popen(
            [*HOOKLANE, "up"],
            cwd=checkout,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            banner = _Lines(process).wait_for("Press Ctrl-C to stop.", process)
            yield DevStack(checkout, api_port, banner)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        assert not (checkout / ENV_FILE).exists(), "a stopped stack leaves no stale addresses"


def run_in(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`hooklane ARGS` in the checkout, with no ``HOOKLANE_*`` variable set."""
    return subprocess.run(
        [*HOOKLANE, *args],
        cwd=stack.checkout,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_banner_names_the_env_file_and_the_dev_tenant(dev_stack: DevStack) -> None:
    """The banner says where the addresses are and which tenant the dev key belongs to."""
    assert str(ENV_FILE) in dev_stack.banner
    assert re.search(r"Dev tenant:\s+ten_dev", dev_stack.banner)
    written = read_env_file(dev_stack.checkout / ENV_FILE)
    assert written["HOOKLANE_API_PORT"] == str(dev_stack.api_port)
    assert written["HOOKLANE_KAFKA_BOOTSTRAP_SERVERS"] in dev_stack.banner


def test_publish_status_and_portal_link_work_with_no_address_in_the_environment(
    dev_stack: DevStack,
) -> None:
    """The second terminal's commands reach the stack through `.hooklane/env`."""
    published = run_in(
        dev_stack,
        "publish",
        "REGISTRATIONS.NEW.SUCCEEDED",
        "--tenant",
        "ten_dev",
        "--data",
        '{"registration_id": "reg_1"}',
    )
    assert published.returncode == 0, published.stderr
    assert re.fullmatch(r"[0-9a-f-]{36}\n", published.stdout)

    status = run_in(dev_stack, "status")
    assert status.returncode == 0, status.stderr
    assert "hooklane-router" in status.stdout and "hooklane-deliverer" in status.stdout

    link = run_in(dev_stack, "portal-link", "ten_dev")
    assert link.returncode == 0, link.stderr
    url = link.stdout.splitlines()[0]
    assert url.startswith(f"http://127.0.0.1:{dev_stack.api_port}/portal/login/")
    with urllib.request.urlopen(url, timeout=10) as response:  # the API's real port
        assert response.status == 200
        assert b"Signed in" in response.read()


def readme_python(heading: str) -> list[str]:
    """The ``python`` blocks of the README section ``heading``, as written."""
    text = section((ROOT / "README.md").read_text("utf-8"), heading)
    return [code for lang, code in FENCE.findall(text) if lang == "python"]


def test_every_readme_python_block_compiles() -> None:
    """No snippet is a SyntaxError as written (a top-level `async with` was one)."""
    readme = (ROOT / "README.md").read_text("utf-8")
    blocks = [code for lang, code in FENCE.findall(readme) if lang == "python"]
    assert blocks
    for code in blocks:
        compile(code, "README.md", "exec")


async def test_readme_producer_and_verification_snippets_run_against_the_stack(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """The producer script publishes to the dev stack from the checkout; both receiver
    snippets verify what the stack delivers, for a generated and a chosen secret."""
    [producer] = readme_python("### Publish events (producers)")
    verify_blocks = readme_python("### Verify signatures (receivers)")
    assert len(verify_blocks) == 2
    api = f"http://127.0.0.1:{dev_stack.api_port}"
    key = banner_value(dev_stack.banner, "Dev API key")
    received: list[tuple[str, bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.path, await request.read(), dict(request.headers)))
        return web.Response()

    app = web.Application()
    app.router.add_post("/{name}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    secrets = {}
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            for name, chosen in (("generated", None), ("chosen", "my-own-secret-2026")):
                body: dict[str, object] = {
                    "url": f"http://127.0.0.1:{port}/{name}",
                    "topics": ["REGISTRATIONS.NEW.SUCCEEDED"],
                }
                if chosen:
                    body["secret"] = chosen
                async with http.post(f"{api}/webhooks", json=body) as response:
                    assert response.status == 201, await response.text()
                    secrets[f"/{name}"] = chosen or (await response.json())["secret"]
        script = tmp_path / "producer.py"
        script.write_text(producer)
        ran = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=dev_stack.checkout,
            env=bare_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(ran.communicate(), 60)
        assert ran.returncode == 0, err.decode()
        event_id = out.decode().strip()

        def arrived() -> bool:
            return {path for path, raw, _ in received if event_id.encode() in raw} == set(secrets)

        await wait_until(arrived, 60, message="deliveries")
    finally:
        await runner.cleanup()
    namespace: dict[str, Any] = {}
    for code in verify_blocks:
        exec(compile(code, "README.md", "exec"), namespace)
    assert secrets["/generated"].startswith("whsec_")
    delivered = set()
    for path, raw, headers in received:  # an earlier test's event may arrive too
        secret = secrets[path]
        delivered.add((path, namespace["verify"](secret, raw, headers)["id"]))
        namespace["verify_commenda"](secret, raw, headers)
        with pytest.raises(WebhookVerificationError):  # a wrong secret is refused by both
            namespace["verify"]("whsec_" + "A" * 43, raw, headers)
        with pytest.raises(ValueError):
            namespace["verify_commenda"]("not-the-secret-at-all", raw, headers)
    assert {(path, event_id) for path in secrets} <= delivered


def test_lookups_and_topics_ensure_agree_with_the_dev_stack(dev_stack: DevStack) -> None:
    """`tenants list`, `topics list` and `topics ensure` beside the stack: the dev tenant,
    the catalog, and the stack's own partition counts (1 per mirror, 4 for deliveries)
    with no capacity warning."""
    tenants = run_in(dev_stack, "tenants", "list")
    assert tenants.returncode == 0 and re.search(
        r"^ten_dev\s+Development tenant", tenants.stdout, re.M
    )
    topics = run_in(dev_stack, "topics", "list")
    assert topics.returncode == 0 and re.search(
        r"^REGISTRATIONS\.NEW\.SUCCEEDED\s+\S", topics.stdout, re.M
    )
    ensured = run_in(dev_stack, "topics", "ensure")
    assert ensured.returncode == 0, ensured.stderr
    assert "warning" not in ensured.stdout
    assert "topic hooklane.deliveries: exists, 4 partition(s)" in ensured.stdout
    assert "topic hooklane.REGISTRATIONS.NEW.SUCCEEDED: exists, 1 partition(s)" in ensured.stdout
