"""``hooklane status``: the state of a running installation on one screen.

Consumer groups (members, assigned partitions, lag: total and worst partition),
parked webhooks and the backlog, the webhooks failing longest, and the last minute's
attempts by outcome. ``collect`` gathers it from the broker and Postgres;
``render_text`` and ``to_json`` are pure.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from dispatcher.ops.lag import LagSummary, OffsetReader, summarize
from dispatcher.settings import Settings
from dispatcher.store import attempt_store as attempts
from dispatcher.store import backlog
from dispatcher.store import webhook_store as webhooks
from dispatcher.store.backlog import BacklogStats
from dispatcher.store.webhook_store import FailingWebhook

FAILING_LIMIT = 10


@dataclass(frozen=True, slots=True)
class Member:
    """One consumer of a group and the partitions it was assigned."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A consumer group: its state, members and lag per partition."""

    group: str
    state: str
    members: tuple[Member, ...]
    lag: Mapping[TopicPartition, int] = field(default_factory=dict)

    @property
    def summary(self) -> LagSummary:
        """Total lag and the worst partition."""
        return summarize(self.lag)


@dataclass(frozen=True, slots=True)
class Status:
    """Everything ``hooklane status`` shows."""

    taken_at: datetime
    groups: tuple[GroupStatus, ...]
    backlog: BacklogStats
    failing: tuple[FailingWebhook, ...]
    last_minute: Mapping[str, int]


def parse_groups(description: Mapping[str, Any]) -> dict[str, tuple[str, tuple[Member, ...]]]:
    """``{group: (state, members)}`` from a DescribeGroups response's ``to_object()``.

    Groups answered with an error (unknown groups; tansu also garbles their fields)
    are left out: the caller shows them as having no members.
    """
    found = {}
    for group in description.get("groups", ()):
        if group.get("error_code") or not group.get("group"):
            continue
        members = tuple(_member(member) for member in group.get("members", ()))
        found[group["group"]] = (str(group.get("state", "")), members)
    return found


def _member(member: Mapping[str, Any]) -> Member:
    raw = member.get("member_assignment") or b""
    # Some brokers (tansu) return no assignment bytes; the partitions are then unknown.
    partitions = tuple(ConsumerProtocolMemberAssignment.decode(raw).partitions()) if raw else ()
    return Member(
        str(member.get("member_id", "")),
        str(member.get("client_id", "")),
        str(member.get("client_host", "")),
        tuple(sorted(partitions)),
    )


async def collect(settings: Settings, reader: OffsetReader, pool: asyncpg.Pool) -> Status:
    """Gather the status from the broker (through ``reader``) and Postgres."""
    from dispatcher.deliverer import GROUP_ID as DELIVERER_GROUP
    from dispatcher.router.router import GROUP_ID as ROUTER_GROUP
    from dispatcher.router.router import mirror_pattern

    mirror = re.compile(mirror_pattern(settings.topic_prefix))
    topics_of = {
        ROUTER_GROUP: lambda name: mirror.fullmatch(name) is not None,
        DELIVERER_GROUP: lambda name: name == settings.deliveries_topic,
    }
    groups = []
    for group, accepts in topics_of.items():
        # One group per request: tansu garbles a response describing several.
        described: dict[str, tuple[str, tuple[Member, ...]]] = {}
        for response in await reader.admin.describe_consumer_groups([group]):
            described.update(parse_groups(response.to_object()))
        state, members = described.get(group, ("Empty", ()))
        lag = await reader.lag(group, await reader.partitions(accepts))
        groups.append(GroupStatus(group, state or "Empty", members, lag))
    return Status(
        taken_at=datetime.now(UTC),
        groups=tuple(groups),
        backlog=await backlog.backlog_stats(pool),
        failing=tuple(await webhooks.failing_webhooks(pool, FAILING_LIMIT)),
        last_minute=await attempts.recent_outcomes(pool),
    )


def _tp(tp: TopicPartition | None) -> str | None:
    return None if tp is None else f"{tp.topic}/{tp.partition}"


def to_json(status: Status) -> dict[str, Any]:
    """The status as a JSON-ready dict (``--json``)."""
    return {
        "taken_at": status.taken_at.isoformat(),
        "groups": [
            {
                "group": g.group,
                "state": g.state,
                "members": [
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "partitions": [_tp(tp) for tp in m.partitions],
                    }
                    for m in g.members
                ],
                "lag": {
                    "total": g.summary.total,
                    "worst_partition": _tp(g.summary.worst),
                    "worst_lag": g.summary.worst_lag,
                    "partitions": {_tp(tp): lag for tp, lag in sorted(g.lag.items())},
                },
            }
            for g in status.groups
        ],
        "backlog": {
            "parked_webhooks": status.backlog.parked_webhooks,
            "deliveries": status.backlog.deliveries,
            "oldest_age_seconds": round(status.backlog.oldest_age_s, 3),
        },
        "failing_webhooks": [
            {
                "id": w.id,
                "tenant_id": w.tenant_id,
                "url": w.url,
                "state": w.state,
                "failing_since": w.failing_since.isoformat(),
                "consecutive_failures": w.consecutive_failures,
            }
            for w in status.failing
        ],
        "last_minute": dict(status.last_minute),
    }


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render_text(status: Status) -> str:
    """One screen, readable at a glance."""
    lines = [f"Hooklane status at {status.taken_at:%Y-%m-%d %H:%M:%S} UTC", ""]
    lines.append("Consumer groups")
    for g in status.groups:
        summary = g.summary
        worst = f", worst {_tp(summary.worst)} = {summary.worst_lag}" if summary.worst_lag else ""
        lines.append(
            f"  {g.group:<20} {g.state:<12} {len(g.members)} member(s)  lag {summary.total}{worst}"
        )
        for m in g.members:
            parts = ",".join(str(tp.partition) for tp in m.partitions) or "?"
            lines.append(f"    {m.member_id[:48]:<48} {m.host or '-':<15} partitions {parts}")
    b = status.backlog
    lines += [
        "",
        f"Backlog       {b.parked_webhooks} parked webhook(s), {b.deliveries} deliveries,"
        f" oldest {_age(b.oldest_age_s) if b.deliveries else '-'}",
        "",
        "Failing longest",
    ]
    now = status.taken_at
    if not status.failing:
        lines.append("  none")
    for w in status.failing:
        since = _age((now - w.failing_since).total_seconds())
        lines.append(
            f"  {w.id}  {since:>6}  {w.consecutive_failures:>5} failures  {w.state:<8} {w.url}"
        )
    outcomes = "  ".join(f"{k} {v}" for k, v in sorted(status.last_minute.items())) or "none"
    lines += ["", f"Last minute   {outcomes}"]
    return "\n".join(lines)


async def status_once(settings: Settings) -> Status:
    """Connect, collect once, disconnect."""
    from dispatcher.store import db

    reader = OffsetReader(settings)
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await reader.start()
        return await collect(settings, reader, pool)
    finally:
        await reader.close()
        await pool.close()


async def watch(settings: Settings, interval_s: float, show: Any) -> None:
    """Call ``show(status)`` every ``interval_s`` until interrupted."""
    while True:
        started = time.monotonic()
        show(await status_once(settings))
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
