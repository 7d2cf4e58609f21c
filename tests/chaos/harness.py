"""Chaos harness: a real stack as subprocesses, a stream of events, disruptions, a ledger.

- ``Stack``: ``python -m dispatcher.router`` and ``python -m dispatcher.deliverer`` as
  subprocesses (logs in the test's tmp dir) that can be SIGKILLed and respawned; more
  of each join under numbered names (``deliverer2``) and leave with ``terminate``.
- ``Stream``: publishes events at a steady rate, retrying a publish with the same
  event id until the broker acknowledges it (at-least-once on the producer side too).
- ``Ledger``: what was published when, what each webhook received when.
- ``Outcome``: one row of the table ``make chaos`` prints (scenario, events, lost,
  duplicates, first-arrival order violations, recovery time); ``RESULTS`` collects
  them for the terminal summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from dispatcher.kafka.broker import free_port
from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store.tenants import create_tenant
from tests.support.pipeline import create_webhook, ensure_mirror_topics, settings_env
from tests.support.receiver import Receiver

TOPIC = "REGISTRATIONS.NEW.SUCCEEDED"
MODULES = {"router": "dispatcher.router", "deliverer": "dispatcher.deliverer"}


@dataclass(frozen=True)
class Outcome:
    """One scenario's figures."""

    scenario: str
    events: int  # (event, webhook) deliveries expected
    lost: int
    duplicates: int
    # Events that first arrived after a later-published one, summed over webhooks.
    order_violations: int
    recovery_s: float  # worst time from a disruption's end until its backlog was delivered
    disruptions: int
    logged: int = 0  # distinct (event, webhook) successes in the attempt log
    longest_gap_s: float = 0.0  # the longest time without any delivery arriving
    died: str = "-"  # the router/deliverer processes that exited by themselves

    def row(self) -> tuple[str, ...]:
        return (
            self.scenario,
            str(self.events),
            str(self.lost),
            str(self.duplicates),
            str(self.order_violations),
            f"{self.recovery_s:.2f}",
            str(self.disruptions),
            f"{self.logged}/{self.events}",
            f"{self.longest_gap_s:.2f}",
            self.died,
        )


RESULTS: list[Outcome] = []
HEADER = (
    "scenario",
    "events",
    "lost",
    "duplicates",
    "order violations",
    "recovery s",
    "disruptions",
    "logged",
    "longest gap s",
    "died",
)


def longest_gap(arrivals: list[float]) -> float:
    """The longest time between two consecutive arrivals (0 for fewer than two)."""
    ordered = sorted(arrivals)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a fixed-width text table."""
    rows = [HEADER, *(outcome.row() for outcome in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


@dataclass
class Stack:
    """Router and deliverer subprocesses that a scenario may kill and respawn."""

    settings: Settings
    logs: Path
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    spawned: dict[str, int] = field(default_factory=dict)

    async def start(self) -> None:
        for name in MODULES:
            await self.spawn(name)

    async def spawn(self, name: str) -> None:
        """Start (again) ``name`` ("router" or "deliverer", numbered for more of them)."""
        self.spawned[name] = self.spawned.get(name, 0) + 1
        log = self.logs / f"{name}.{self.spawned[name]}.log"
        with log.open("wb") as out:
            self.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                MODULES[name.rstrip("0123456789")],
                # Each process its own ops port, as in production (one per pod).
                env=settings_env(self.settings.replace(metrics_port=free_port())),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    async def kill(self, name: str) -> None:
        """SIGKILL ``name``: no cleanup, no commit, no goodbye to the group."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        await process.wait()

    async def terminate(self, name: str) -> None:
        """SIGTERM ``name`` (a graceful leave, as when scaling down) and forget it."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        await process.wait()

    def alive(self) -> dict[str, bool]:
        """Whether each process is still running (recovery needs no operator)."""
        return {name: process.returncode is None for name, process in self.processes.items()}

    async def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


@dataclass
class Ledger:
    """Published events and their receipts per webhook."""

    tenant_id: str
    webhook_paths: dict[str, str]  # webhook id -> receiver path
    published: dict[str, float] = field(default_factory=dict)  # event id -> time sent

    def receipts(self, rx: Receiver) -> list[tuple[str, str, float]]:
        """(webhook id, event id, received at) of every request received."""
        found = []
        for webhook_id, path in self.webhook_paths.items():
            for request in rx.on(path):
                found.append((webhook_id, request.event_id, request.received_at))
        return found

    def missing(self, rx: Receiver) -> int:
        """Expected (event, webhook) deliveries not received yet."""
        got = {(webhook, event) for webhook, event, _ in self.receipts(rx)}
        return sum(
            (webhook, event) not in got
            for event in self.published
            for webhook in self.webhook_paths
        )

    def outcome(
        self,
        scenario: str,
        rx: Receiver,
        disruption_ends: list[float],
        unhealthy: frozenset[str] = frozenset(),
    ) -> Outcome:
        """The figures; ``unhealthy`` receiver paths (failing, so parked, on purpose) are
        left out of the recovery time, which would otherwise be their unparking."""
        receipts = self.receipts(rx)
        expected = len(self.published) * len(self.webhook_paths)
        unique = {(webhook, event) for webhook, event, _ in receipts if event in self.published}
        first_seen: dict[tuple[str, str], float] = {}  # (webhook, event) -> first receipt
        for webhook, event, at in receipts:
            first_seen[(webhook, event)] = min(at, first_seen.get((webhook, event), at))
        return Outcome(
            scenario=scenario,
            events=expected,
            lost=expected - len(unique),
            duplicates=len(receipts) - len(unique),
            order_violations=self.order_violations(rx),
            recovery_s=max(
                (self._recovery(end, first_seen, unhealthy) for end in disruption_ends),
                default=0,
            ),
            disruptions=len(disruption_ends),
            longest_gap_s=longest_gap([at for _, _, at in receipts]),
        )

    def order_violations(self, rx: Receiver) -> int:
        """Per webhook, events whose first arrival came after a later-published event's.

        Every event here has one ordering key, so publish order is the order promised.
        """
        position = {event: n for n, event in enumerate(self.published)}
        violations = 0
        for path in self.webhook_paths.values():
            latest = -1
            seen: set[str] = set()
            for request in rx.on(path):
                event = request.event_id
                if event in seen or event not in position:
                    continue
                seen.add(event)
                if position[event] < latest:
                    violations += 1
                latest = max(latest, position[event])
        return violations

    def _recovery(
        self,
        end: float,
        first_seen: dict[tuple[str, str], float],
        unhealthy: frozenset[str] = frozenset(),
    ) -> float:
        """Seconds from a disruption's ``end`` until every delivery of the events published
        before it had arrived: the backlog it caused is drained (0 if nothing was owed)."""
        healthy = [hook for hook, path in self.webhook_paths.items() if path not in unhealthy]
        owed = [
            first_seen.get((webhook, event), end)
            for event, sent in self.published.items()
            if sent < end
            for webhook in healthy
        ]
        return max(0.0, max(owed, default=end) - end)


async def logged_successes(settings: Settings, ledger: Ledger) -> int:
    """Distinct (event, webhook) pairs of the ledger recorded as successes in the attempt log."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        count = await conn.fetchval(
            "SELECT count(DISTINCT (webhook_id, event_id)) FROM attempts"
            " WHERE webhook_id = ANY($1::uuid[]) AND outcome = 'success' AND NOT test",
            list(ledger.webhook_paths),
        )
    finally:
        await conn.close()
    return int(count)


async def prepare(settings: Settings, rx: Receiver, webhooks: int = 2) -> Ledger:
    """A tenant with ``webhooks`` webhooks on TOPIC (each its own receiver path)."""
    await ensure_mirror_topics(settings, [TOPIC])
    conn = await asyncpg.connect(settings.database_url)
    try:
        tenant_id, _ = await create_tenant(conn, "chaos")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    paths = {}
    try:
        for index in range(webhooks):
            path = f"hook{index}"
            created = await create_webhook(pool, settings, tenant_id, rx.url_for(path), [TOPIC])
            paths[created.id] = path
    finally:
        await pool.close()
    return Ledger(tenant_id, paths)


async def stream(
    settings: Settings,
    ledger: Ledger,
    count: int,
    rate: float,
    stop: asyncio.Event | None = None,
) -> None:
    """Publish ``count`` events (fewer if ``stop`` is set first) at about ``rate`` per
    second, each acknowledged."""
    async with Producer(settings) as producer:
        for index in range(count):
            if stop is not None and stop.is_set():
                break
            sent_at = time.time()
            event_id = f"chaos-{index:05d}-{int(sent_at * 1000)}"
            while True:
                try:
                    await asyncio.wait_for(
                        producer.publish(
                            TOPIC,
                            {"registration_id": f"r{index}"},
                            ledger.tenant_id,
                            event_id=event_id,
                        ),
                        45,
                    )
                    break
                except Exception:  # broker frozen or restarting: retry with the same event id
                    await asyncio.sleep(0.5)
            ledger.published[event_id] = sent_at
            await asyncio.sleep(max(0.0, 1 / rate - (time.time() - sent_at)))
