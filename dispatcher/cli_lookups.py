"""The read-only ``hooklane`` lookups: ``tenants list``, ``topics list``, ``events show``.

Each prints plain text (``events show --json``: the ``GET /events/:id`` body) and
returns the exit status: 1 when the thing looked up does not exist.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from dispatcher.runtime import event_loop
from dispatcher.settings import Settings
from dispatcher.store import db
from dispatcher.store.event_report import EventReport, event_report


def main(args: argparse.Namespace, settings: Settings) -> int:
    """Run the lookup ``args`` names; print it; the exit status."""
    action = getattr(args, f"{args.command}_command")
    lookup: Callable[[asyncpg.Pool, argparse.Namespace], Awaitable[tuple[list[str], bool]]] = {
        ("tenants", "list"): _tenants,
        ("topics", "list"): _topics,
        ("events", "show"): _event,
    }[(args.command, action)]
    lines, found = event_loop.run(_with_pool(settings, args, lookup), settings.event_loop)
    print("\n".join(lines))
    return 0 if found else 1


async def _with_pool(
    settings: Settings,
    args: argparse.Namespace,
    lookup: Callable[[asyncpg.Pool, argparse.Namespace], Awaitable[tuple[list[str], bool]]],
) -> tuple[list[str], bool]:
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await lookup(pool, args)
    finally:
        await pool.close()


async def _tenants(pool: asyncpg.Pool, args: argparse.Namespace) -> tuple[list[str], bool]:
    from dispatcher.store.tenants import list_tenants

    lines = [
        f"{tenant_id}  {name}  (created {created:%Y-%m-%d})"
        for tenant_id, name, created in await list_tenants(pool)
    ]
    return lines or ["no tenants (`hooklane tenants create NAME` makes one)"], True


async def _topics(pool: asyncpg.Pool, args: argparse.Namespace) -> tuple[list[str], bool]:
    from dispatcher.store.topic_store import list_topics

    topics = await list_topics(pool)
    width = max((len(topic.name) for topic in topics), default=0)
    return [f"{topic.name.ljust(width)}  {topic.description}" for topic in topics], True


async def _event(pool: asyncpg.Pool, args: argparse.Namespace) -> tuple[list[str], bool]:
    from dispatcher.router.subscription_index import routes_to_stored

    report = await event_report(pool, args.tenant, args.event_id, routes_to_stored)
    if report is None:
        return [
            f"no event {args.event_id!r} of tenant {args.tenant!r}"
            " (unknown, another tenant's, or older than the retention)"
        ], False
    if args.json:
        return [orjson.dumps(report.to_json()).decode()], True
    return render_event(report), True


def render_event(report: EventReport) -> list[str]:
    """The text form of ``hooklane events show``."""
    event = report.event
    lines = [f"event {event.id}  topic {event.topic}  triggered_at {event.triggered_at}"]
    if report.state == "dead_lettered":
        return [*lines, f"state: dead_lettered: {report.reason}"]
    lines.append(f"state: routed, {len(report.deliveries)} webhook(s)")
    for delivery in report.deliveries:
        detail = f"{delivery.attempts} attempt(s)"
        if delivery.last_attempt_at is not None:
            code = delivery.last_status_code if delivery.last_status_code is not None else "-"
            detail += f", last: {code} at {delivery.last_attempt_at.isoformat()}"
        lines.append(f"  webhook {delivery.webhook_id}: {delivery.status} ({detail})")
    return lines
