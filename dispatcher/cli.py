"""The ``hooklane`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka.errors import KafkaError

from dispatcher.kafka.broker import CodecsError
from dispatcher.kafka.producer import ProducerError
from dispatcher.kafka.topic_admin import TopicsError
from dispatcher.runtime import event_loop
from dispatcher.settings import ENV_FILE, PREFIX, Settings, SettingsError, with_env_file
from dispatcher.store import db

# Commands that encrypt or decrypt webhook secrets, or run beside ones that do: each
# must be given the same HOOKLANE_SECRET_KEY (never one guessed from the directory).
NEEDS_SECRET_KEY = frozenset({"api", "router", "deliverer", "rotate-secrets"})


# What a command reports in one line (exit 1) instead of a traceback. ProducerError
# covers a catalog topic whose Kafka topic is missing; PostgresError an unusable database.
COMMAND_FAILURES: tuple[type[Exception], ...] = (
    db.DatabaseError,
    asyncpg.PostgresError,
    TopicsError,
    CodecsError,
    KafkaError,
    ProducerError,
    ValueError,
    OSError,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="hooklane", description="Hooklane webhook delivery")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="run the whole stack on embedded defaults")
    sub.add_parser("api", help="run the management API")
    sub.add_parser("router", help="run the router (consumer group hooklane-router)")
    sub.add_parser("deliverer", help="run the deliverer (consumer group hooklane-deliverer)")
    sub.add_parser(
        "migrate",
        help="create the database if needed, apply migrations and create the Kafka topics",
    )
    sub.add_parser("secret-key", help="print a new key for HOOKLANE_SECRET_KEY")
    sub.add_parser(
        "rotate-secrets",
        help="re-encrypt every webhook secret (and TLS client key and auth secret)"
        " under the first key of HOOKLANE_SECRET_KEY",
    )

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="tenants_command", required=True, metavar="ACTION"
    )
    create = tenants.add_parser("create", help="create a tenant and print its API key")
    create.add_argument("name")
    tenants.add_parser("list", help="list the tenants (id, name, created)")

    keys = sub.add_parser("keys", help="list, create and revoke API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    keys.add_parser("list", help="a tenant's API keys (never the keys)").add_argument("tenant")
    create_key = keys.add_parser("create", help="create an API key and print it (once)")
    create_key.add_argument("tenant")
    create_key.add_argument("--name", default="", help="what the key is for")
    revoke_key = keys.add_parser(
        "revoke", help="revoke a key with its portal sessions and unused portal links"
    )
    revoke_key.add_argument("key_id", help="the key's id (key_...)")

    topics = sub.add_parser("topics", help="manage the topic catalog").add_subparsers(
        dest="topics_command", required=True, metavar="ACTION"
    )
    add = topics.add_parser("add", help="add or update a catalog topic")
    add.add_argument("name")
    add.add_argument("--schema", type=Path, help="JSON Schema file of the event's data")
    add.add_argument("--description", default="")
    topics.add_parser("list", help="list the catalog's topics (name, description)")
    topics.add_parser(
        "ensure",
        help="create the internal and mirror Kafka topics that are missing; report them",
    )

    portal = sub.add_parser("portal-link", help="print a one-time tenant portal link")
    portal.add_argument("tenant", help="the tenant id (ten_...)")

    status = sub.add_parser("status", help="consumer groups, lag, backlog and failing webhooks")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )

    events = sub.add_parser("events", help="look events up").add_subparsers(
        dest="events_command", required=True, metavar="ACTION"
    )
    show = events.add_parser("show", help="an event's state and its deliveries per webhook")
    show.add_argument("event_id")
    show.add_argument("--tenant", required=True, help="the event's tenant (ten_...)")
    show.add_argument("--json", action="store_true", help="print the GET /events/:id body")

    publish = sub.add_parser("publish", help="publish one event")
    publish.add_argument("topic")
    publish.add_argument("--tenant", required=True)
    publish.add_argument("--data", default="{}", help="the event's data as JSON")
    publish.add_argument("--key", help="ordering key (default: the tenant id)")
    publish.add_argument("--traceparent", help="W3C traceparent to continue (default: a new trace)")

    bench = sub.add_parser("bench", help="run the benchmark suite", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hooklane`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # argparse's REMAINDER drops leading options (`bench --quick`): pass all through.
        args = argparse.Namespace(command="bench", bench_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(env_file=settings_file(args.command))
    except SettingsError as exc:
        print(f"hooklane: bad setting: {exc}", file=sys.stderr)
        return 2
    from dispatcher.logs import configure_logging

    configure_logging(settings)
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except SettingsError as exc:  # a configuration problem: like a bad setting above
        print(f"hooklane {args.command}: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"hooklane {args.command}: {_kafka_cause(settings) or exc}", file=sys.stderr)
        return 1
    except COMMAND_FAILURES as exc:
        print(f"hooklane {args.command}: {exc}", file=sys.stderr)
        return 1


def settings_file(command: str) -> Path | None:
    """The env file ``command`` completes its settings from: ``.hooklane/env`` for all
    but ``up``, which writes it (and must not adopt a previous stack's addresses)."""
    return None if command == "up" else ENV_FILE


def _kafka_cause(settings: Settings) -> str | None:
    """Why the brokers refused (wrong password, untrusted CA, ...), when they do."""
    from dispatcher.kafka.connection import connection_problem

    if not settings.kafka_bootstrap_servers:
        return None
    return asyncio.run(connection_problem(settings))


def _need_broker(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise SettingsError(
            f"{PREFIX}KAFKA_BOOTSTRAP_SERVERS is not set and there is no {ENV_FILE} here"
            " (`hooklane up` starts an embedded broker and writes its address there)"
        )
    return settings.kafka_bootstrap_servers


def _need_secret_key(settings: Settings) -> None:
    """Refuse a missing or malformed key before anything touches a database."""
    from dispatcher.delivery.secrets import SecretBox, SecretKeyError

    try:
        SecretBox.from_setting(settings.secret_key)
    except SecretKeyError as exc:
        raise SettingsError(str(exc)) from None


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command: str = args.command
    if command in NEEDS_SECRET_KEY:
        _need_secret_key(settings)
    if command == "up":
        from dispatcher.runtime.supervisor import run_stack

        explicit = bool(os.environ.get(PREFIX + "DATABASE_URL"))
        return event_loop.run(run_stack(settings, explicit), settings.event_loop)
    if command == "api":
        # dispatcher never imports api: run it as its own module.
        env = dict(with_env_file(os.environ, settings_file(command)))
        os.execve(sys.executable, [sys.executable, "-m", "api"], env)
    if command == "router":
        _need_broker(settings)
        from dispatcher.ops.tracing import configure_tracing
        from dispatcher.runtime.operations import run_router

        configure_tracing("router", os.environ)
        event_loop.tune_gc()
        event_loop.run(run_router(settings), settings.event_loop)
        return 0
    if command == "deliverer":
        _need_broker(settings)
        from dispatcher.ops.tracing import configure_tracing
        from dispatcher.runtime.operations import run_deliverer

        configure_tracing("deliverer", os.environ)
        event_loop.tune_gc()
        event_loop.run(run_deliverer(settings), settings.event_loop)
        return 0
    if command == "migrate":
        applied = event_loop.run(db.migrate(settings.database_url), settings.event_loop)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        if settings.kafka_bootstrap_servers:
            event_loop.run(_ensure_topics(settings), settings.event_loop)
        else:
            print(f"Kafka topics: not created ({PREFIX}KAFKA_BOOTSTRAP_SERVERS is not set)")
        return 0
    if command == "secret-key":
        from dispatcher.delivery.secrets import new_key

        print(new_key())
        return 0
    if command == "rotate-secrets":
        count = event_loop.run(_rotate_secrets(settings), settings.event_loop)
        print(f"re-encrypted {count} webhook secret(s) under the first key")
        return 0
    if _is_lookup(args):
        from dispatcher import cli_lookups

        return cli_lookups.main(args, settings)
    if command == "tenants":
        tenant_id, api_key = event_loop.run(
            _create_tenant(settings, args.name), settings.event_loop
        )
        print(f"tenant:  {tenant_id}\napi key: {api_key}\n(the key is shown only once)")
        return 0
    if command == "keys":
        return event_loop.run(_keys(settings, args), settings.event_loop)
    if command == "topics" and args.topics_command == "ensure":
        _need_broker(settings)
        event_loop.run(_ensure_topics(settings), settings.event_loop)
        return 0
    if command == "topics":
        schema = _read_schema(args.schema)
        event_loop.run(
            _add_topic(settings, args.name, args.description, schema), settings.event_loop
        )
        print(f"topic {args.name} added")
        return 0
    if command == "portal-link":
        url, expires_at = event_loop.run(_portal_link(settings, args.tenant), settings.event_loop)
        print(f"{url}\n(one use, valid until {expires_at})")
        return 0
    if command == "status":
        _need_broker(settings)
        return _status(settings, args)
    if command == "publish":
        _need_broker(settings)
        event_id = event_loop.run(_publish(settings, args), settings.event_loop)
        print(event_id)
        return 0
    if command == "bench":
        from dispatcher.bench import main as bench_main

        return bench_main(args.bench_args)
    raise AssertionError(command)  # argparse only accepts the commands above


def _is_lookup(args: argparse.Namespace) -> bool:
    """``tenants list``, ``topics list`` or ``events show`` (``dispatcher.cli_lookups``)."""
    action = getattr(args, f"{args.command}_command", None)
    return args.command in {"tenants", "topics", "events"} and action in {"list", "show"}


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.runtime import status

    def show(current: status.Status) -> None:
        if args.json:
            print(orjson.dumps(status.to_json(current)).decode(), flush=True)
        else:
            clear = "\x1b[H\x1b[2J" if args.watch and sys.stdout.isatty() else ""
            print(clear + status.render_text(current), flush=True)

    from aiokafka.errors import KafkaError

    if args.watch is not None and args.watch <= 0:
        raise ValueError("--watch takes a positive number of seconds")
    try:
        if args.watch:
            event_loop.run(status.watch(settings, args.watch, show), settings.event_loop)
        else:
            show(event_loop.run(status.status_once(settings), settings.event_loop))
    except KafkaError as exc:
        cause = _kafka_cause(settings) or f"the broker does not answer: {exc}"
        print(f"hooklane status: {cause}", file=sys.stderr)
        return 1
    return 0


def _read_schema(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {"type": "object"}
    try:
        schema = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise ValueError(f"{path} must hold a JSON Schema object")
    return schema


async def _create_tenant(settings: Settings, name: str) -> tuple[str, str]:
    from dispatcher.store.tenants import create_tenant

    await db.migrate(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await create_tenant(conn, name)
    finally:
        await conn.close()


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from dispatcher.store import api_key_store

    await db.migrate(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        if args.keys_command == "create":
            key, secret = await api_key_store.create_api_key(conn, args.tenant, args.name)
            print(f"id:      {key.id}\napi key: {secret}\n(the key is shown only once)")
        elif args.keys_command == "revoke":
            if not await api_key_store.revoke_api_key(conn, args.key_id):
                raise ValueError(f"no API key {args.key_id!r}")
            print(f"revoked {args.key_id} (and its portal sessions and links)")
        else:
            for key in await api_key_store.list_api_keys(conn, args.tenant):
                when = key.revoked_at.isoformat() if key.revoked_at else "live"
                used = key.last_used_at.isoformat() if key.last_used_at else "never used"
                print(f"{key.id}  {key.prefix}…  {key.name or '-'}  {used}  {when}")
    finally:
        await conn.close()
    return 0


async def _rotate_secrets(settings: Settings) -> int:
    from dispatcher.delivery.secrets import SecretBox
    from dispatcher.store.webhook_store import reencrypt_secrets

    box = SecretBox.from_setting(settings.secret_key)
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await reencrypt_secrets(conn, box)
    finally:
        await conn.close()


async def _add_topic(settings: Settings, name: str, description: str, schema: Any) -> None:
    from dispatcher.store.topic_store import add_topic

    await db.migrate(settings.database_url)
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await add_topic(pool, name, description, schema)
    finally:
        await pool.close()
    if settings.kafka_bootstrap_servers:
        from dispatcher.kafka.topic_admin import ensure_topics

        await ensure_topics(
            settings,
            {settings.mirror_topic(name): settings.topic_partitions},
            settings.kafka_replication_factor,
        )


async def _portal_link(settings: Settings, tenant_id: str) -> tuple[str, str]:
    from dispatcher.store.portal import create_link

    await db.migrate(settings.database_url)
    # A wildcard listen address is not somewhere a browser can go: use loopback.
    host = "127.0.0.1" if settings.api_host in {"0.0.0.0", "::"} else settings.api_host
    conn = await asyncpg.connect(settings.database_url)
    try:
        link = await create_link(
            conn, tenant_id, settings.portal_link_ttl, f"http://{host}:{settings.api_port}"
        )
    finally:
        await conn.close()
    return link.url, link.expires_at.isoformat()


async def _ensure_topics(settings: Settings) -> None:
    """Create the missing topics, then print each one and what limits delivery capacity."""
    from dispatcher.deliverer import GROUP_ID
    from dispatcher.kafka.topic_admin import capacity_warnings, group_members
    from dispatcher.runtime.supervisor import create_kafka_topics

    replication = settings.kafka_replication_factor or "cluster default"
    for state in await create_kafka_topics(settings):
        verb = "created" if state.created else "exists"
        print(
            f"topic {state.name}: {verb}, {state.partitions} partition(s),"
            f" {state.replicas} replica(s) (wanted: {replication})"
        )
        wanted = settings.kafka_replication_factor
        if wanted is not None and state.replicas < wanted:
            # Hooklane never re-replicates an existing topic: that is a reassignment.
            print(f"warning: {state.name}: {state.replicas} replica(s), fewer than {wanted}")
        if state.name == settings.deliveries_topic:
            members = await group_members(settings, GROUP_ID)
            for warning in capacity_warnings(
                state.partitions, settings.deliveries_partitions, members
            ):
                print(f"warning: {state.name}: {warning}")


async def _publish(settings: Settings, args: argparse.Namespace) -> str:
    """Check the event as ``POST /events`` does (catalog, tenant, schema), then publish."""
    from dispatcher.kafka.producer import Producer
    from dispatcher.messages import trace_context
    from dispatcher.messages.topic_schemas import ValidatorCache
    from dispatcher.publish_rules import catalog_topic, check_data, require_tenant

    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("--data must be a JSON object")
    trace = trace_context.fresh()
    if args.traceparent is not None:
        given = trace_context.parse(args.traceparent)
        if given is None:
            raise ValueError(
                "--traceparent is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"
            )
        trace = given
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        topic = await catalog_topic(pool, args.topic, "`hooklane topics list`")
        await require_tenant(pool, args.tenant)
    finally:
        await pool.close()
    check_data(ValidatorCache(), topic, data)
    async with Producer(settings) as producer:
        return await producer.publish(
            topic.name, data, tenant_id=args.tenant, key=args.key, trace=trace
        )


if __name__ == "__main__":
    raise SystemExit(main())
