"""The `mds-sink` command: run the sink, administer its database, produce records, run the demo."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from mds_sink import __version__, migrate
from mds_sink.codec import LocalSchemas
from mds_sink.control_cli import aggregates_app, policies_app, query_app, retention_app
from mds_sink.dlq import Filters
from mds_sink.kafka_io import BrokerUnavailable, StartupError
from mds_sink.logs import configure
from mds_sink.preflight import describe_dsn
from mds_sink.produce import open_lines, publish, table_for
from mds_sink.resources import resource_dir
from mds_sink.settings import Settings, SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
admin = typer.Typer(no_args_is_help=True, help="Schema, policies and tenants of the sink's database.")
tenants_app = typer.Typer(no_args_is_help=True, help="Tenants whose data the sink accepts.")
schemas_app = typer.Typer(no_args_is_help=True, help="The Avro schemas the sink reads.")
offsets_app = typer.Typer(no_args_is_help=True, help="The consumer group's positions.")
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay the dead-letter topics.")
app.add_typer(admin, name="admin")
admin.add_typer(tenants_app, name="tenants")
admin.add_typer(policies_app, name="policies")
admin.add_typer(aggregates_app, name="aggregates")
admin.add_typer(retention_app, name="retention")
app.add_typer(query_app, name="query")
app.add_typer(schemas_app, name="schemas")
app.add_typer(offsets_app, name="offsets")
app.add_typer(dlq_app, name="dlq")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")]
_config: Path | None = None


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"mds-sink: {message}", err=True)
    return typer.Exit(code)


def settings() -> Settings:
    try:
        loaded = load_settings(_config)
    except SettingsError as exc:
        raise fail(str(exc)) from None
    configure(loaded.log.format, loaded.log.level)
    return loaded


@app.callback()
def main_options(config: ConfigOption = None) -> None:
    """mds-sink: drains market-data topics from Kafka into PostgreSQL/TimescaleDB."""
    global _config  # noqa: PLW0603  (one CLI invocation, one config file)
    _config = config


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def run() -> None:
    """Consume the configured topics into the database until SIGTERM/SIGINT."""
    from mds_sink.worker import Worker  # noqa: PLC0415  (keeps `admin` start-up light)

    s = settings()
    worker = Worker(s)
    worker.install_signal_handlers()
    try:
        code = worker.run()
    except StartupError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


# -- admin: migrations ------------------------------------------------------------------------------
def _owner(s: Settings) -> str:
    if s.database.owner_url is None:
        raise fail("invalid setting database.owner_url (MDS_SINK_DATABASE__OWNER_URL): required for admin commands")
    return s.database.owner_url.get_secret_value()


@admin.command("migrate")
def admin_migrate(to: Annotated[str, typer.Option("--to", help="Target revision.")] = "head") -> None:
    """Upgrade the database schema (to head by default). Concurrent runs wait for each other."""
    s = settings()
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    _guard(lambda: migrate.upgrade(s, to), s)
    typer.echo(f"database at revision {migrate.current_revision(s)}")


@admin.command("downgrade")
def admin_downgrade(revision: str) -> None:
    """Downgrade the database schema to REVISION (`base` removes everything)."""
    s = settings()
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    _guard(lambda: migrate.downgrade(s, revision), s)
    typer.echo(f"database at revision {migrate.current_revision(s)}")


@admin.command("stamp")
def admin_stamp(revision: str) -> None:
    """Record REVISION as current without running migrations."""
    s = settings()
    _guard(lambda: migrate.stamp(s, revision), s)
    typer.echo(f"database stamped at {migrate.current_revision(s)}")


@admin.command("current")
def admin_current() -> None:
    """Print the database's schema revision."""
    s = settings()
    current: list[str | None] = []
    _guard(lambda: current.append(migrate.current_revision(s)), s)
    head = migrate.head_revision(s)
    rev = current[0]
    typer.echo(f"{rev or '(none)'}{' (head)' if rev == head else f' (head is {head})'}")


@admin.command("check")
def admin_check() -> None:
    """Exit 0 if the database is at the code's head revision, 1 otherwise."""
    s = settings()
    current: list[str | None] = []
    _guard(lambda: current.append(migrate.current_revision(s)), s)
    head = migrate.head_revision(s)
    if current[0] != head:
        typer.echo(f"database at {current[0] or '(none)'}, code needs {head}: run `mds-sink admin migrate`")
        raise typer.Exit(1)
    typer.echo(f"database at head ({head})")


@admin.command("history")
def admin_history() -> None:
    """List the migrations, oldest first."""
    s = settings()
    for rev, down, doc in migrate.history(s):
        typer.echo(f"{down or '<base>'} -> {rev}  {doc}")


def _guard(action: Callable[[], object], s: Settings) -> None:
    try:
        action()
    except SettingsError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, psycopg.OperationalError) or "connection" in str(cause).lower():
            where = describe_dsn(_owner(s))
            raise fail(f"cannot reach the database at {where}: {str(cause).splitlines()[0]}") from None
        raise


# -- admin: tenants ---------------------------------------------------------------------------------
@tenants_app.command("add")
def tenants_add(
    name: str,
    tenant_id: Annotated[str | None, typer.Option("--id", help="UUID; a new one when omitted.")] = None,
) -> None:
    """Add a tenant (active)."""
    s = settings()
    try:
        tid = uuid.UUID(tenant_id) if tenant_id else uuid.uuid4()
    except ValueError:
        raise fail(f"--id {tenant_id!r} is not a UUID") from None
    with psycopg.connect(_owner(s), autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT (tenant_id) DO UPDATE "
            "SET name = EXCLUDED.name, updated_at = now() RETURNING tenant_id, name, active",
            (tid, name),
        ).fetchone()
    assert row is not None
    typer.echo(f"{row[0]}  {row[1]}  {'active' if row[2] else 'disabled'}")


@tenants_app.command("list")
def tenants_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List tenants."""
    s = settings()
    with psycopg.connect(_owner(s)) as conn:
        rows = conn.execute("SELECT tenant_id::text, name, active FROM tenants ORDER BY name").fetchall()
    if as_json:
        typer.echo(json.dumps([{"tenant_id": t, "name": n, "active": a} for t, n, a in rows], indent=2))
        return
    for t, n, a in rows:
        typer.echo(f"{t}  {n}  {'active' if a else 'disabled'}")


def _set_active(tenant: str, active: bool) -> None:
    s = settings()
    with psycopg.connect(_owner(s), autocommit=True) as conn:
        row = conn.execute(
            "UPDATE tenants SET active = %s, updated_at = now() WHERE tenant_id::text = %s OR name = %s "
            "RETURNING tenant_id, name",
            (active, tenant, tenant),
        ).fetchone()
    if row is None:
        raise fail(f"no tenant with id or name {tenant!r}", 1)
    typer.echo(f"{row[0]}  {row[1]}  {'active' if active else 'disabled'}")


@tenants_app.command("disable")
def tenants_disable(tenant: str) -> None:
    """Disable a tenant (by id or name): its records are dead-lettered from then on."""
    _set_active(tenant, False)


@tenants_app.command("enable")
def tenants_enable(tenant: str) -> None:
    """Enable a tenant again (by id or name)."""
    _set_active(tenant, True)


# -- schemas, offsets, produce ----------------------------------------------------------------------
@schemas_app.command("ids")
def schemas_ids() -> None:
    """Schema ids for registry-less mode: frame records with these (magic 0 + 4-byte id)."""
    s = settings()
    source = LocalSchemas.from_dir(s.schemas_dir or resource_dir("schemas"))
    for schema_id, schema in sorted(source.by_id.items(), key=lambda kv: kv[1]["name"]):
        found = re.search(r"Schema version (\d+\.\d+)", schema.get("doc", ""))
        typer.echo(f"{schema_id:>10}  {schema['namespace']}.{schema['name']}  v{found[1] if found else '?'}")


@offsets_app.command("reset")
def offsets_reset(
    to: Annotated[str, typer.Option("--to", help="earliest")] = "earliest",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Reset the group to the beginning of its topics: Kafka offsets and the offsets ledger.

    Run it with every sink of the group stopped. Re-consuming is safe: upserts are idempotent.
    """
    from mds_sink.offsets_admin import reset_group  # noqa: PLC0415

    if to != "earliest":
        raise fail("--to: only 'earliest' is supported")
    s = settings()
    if not yes and not typer.confirm(f"reset group {s.kafka.group_id} to the earliest offsets?"):
        raise typer.Exit(1)
    try:
        reset = reset_group(s)
    except StartupError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"group {s.kafka.group_id}: {reset} partitions reset to earliest; offsets ledger cleared")


@app.command()
def produce(
    kind: Annotated[str, typer.Argument(help="bar, quote, fundamentals, news, option_snapshot or job_request")],
    file: Annotated[str, typer.Argument(help="NDJSON file (.gz too), or - for stdin")],
    topic: Annotated[str | None, typer.Option(help="Override the topic from settings.")] = None,
) -> None:
    """Publish NDJSON as Avro records in the sink's wire format; bad lines are reported and skipped."""
    s = settings()
    try:
        spec = table_for(kind)
        lines = open_lines(file)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    try:
        with lines:
            done = publish(s, spec, lines, topic=topic, schemas_dir=s.schemas_dir or resource_dir("schemas"))
    except BrokerUnavailable as exc:
        raise fail(str(exc), 1) from None
    for error in done.bad_lines:
        typer.echo(f"{file}: {error}", err=True)
    skipped = f"; {len(done.bad_lines)} bad lines skipped" if done.bad_lines else ""
    typer.echo(f"produced {done.sent} {spec.record} records to {done.topic}{skipped}")
    if done.bad_lines:
        raise typer.Exit(1)


# -- dead letters ----------------------------------------------------------------------------------
ReasonOpt = Annotated[list[str] | None, typer.Option("--reason", help="Reason code (repeatable).")]
TopicOpt = Annotated[list[str] | None, typer.Option("--topic", help="Source topic (repeatable).")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Tenant id.")]
SinceOpt = Annotated[datetime | None, typer.Option("--since", help="Failed at or after (ISO 8601, UTC).")]
UntilOpt = Annotated[datetime | None, typer.Option("--until", help="Failed before (ISO 8601, UTC).")]
MinOffsetOpt = Annotated[int | None, typer.Option("--min-offset", help="Lowest source offset.")]
MaxOffsetOpt = Annotated[int | None, typer.Option("--max-offset", help="Highest source offset.")]


def _filters(
    reason: list[str] | None,
    topic: list[str] | None,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    min_offset: int | None,
    max_offset: int | None,
) -> Filters:
    def utc(at: datetime | None) -> datetime | None:
        return None if at is None else at.replace(tzinfo=at.tzinfo or UTC)

    return Filters(
        frozenset(reason or ()), frozenset(topic or ()), tenant, utc(since), utc(until), min_offset, max_offset
    )


@dlq_app.command("stats")
def dlq_stats(
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters counted by reason, source topic and hour."""
    from mds_sink.dlq import stats, table  # noqa: PLC0415
    from mds_sink.dlq_io import read_dead_letters  # noqa: PLC0415

    s = settings()
    counted = stats(read_dead_letters(s, _filters(reason, topic, tenant, since, until, None, None)))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "total": counted.total,
                    "by_reason": counted.by_reason,
                    "by_topic": counted.by_topic,
                    "by_hour": counted.by_hour,
                },
                indent=2,
            )
        )
        return
    typer.echo(f"{counted.total} dead letters")
    for title, counter in (
        ("reason", counted.by_reason),
        ("source topic", counted.by_topic),
        ("hour (UTC)", counted.by_hour),
    ):
        typer.echo("\n" + table(counter.most_common(), [title, "count"]))


@dlq_app.command("inspect")
def dlq_inspect(
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_offset: MinOffsetOpt = None,
    max_offset: MaxOffsetOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Dead letters decoded, with their headers."""
    from mds_sink.dlq import table  # noqa: PLC0415
    from mds_sink.dlq_io import read_dead_letters  # noqa: PLC0415

    s = settings()
    found = []
    for view in read_dead_letters(s, _filters(reason, topic, tenant, since, until, min_offset, max_offset)):
        found.append(view)
        if len(found) >= limit:
            break
    if as_json:
        for view in found:
            typer.echo(json.dumps(view.as_json(), default=str))
        return
    rows = [
        (
            v.header("mds.dlq.failed.at")[:19],
            f"{v.source_topic}[{v.source_partition}]@{v.source_offset}",
            f"{v.stage}/{v.reason}",
            v.tenant or "-",
            v.replay_count,
            v.header("mds.dlq.message")[:70],
        )
        for v in found
    ]
    typer.echo(table(rows, ["failed at", "source", "reason", "tenant", "replays", "message"]))


@dlq_app.command("replay")
def dlq_replay(
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_offset: MinOffsetOpt = None,
    max_offset: MaxOffsetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    rate: Annotated[float | None, typer.Option(help="At most this many records per second.")] = None,
    max_replays: Annotated[int, typer.Option(help="Refuse records replayed this often.")] = 3,
    direct: Annotated[bool, typer.Option(help="Write to the database instead of the source topic.")] = False,
    from_beginning: Annotated[bool, typer.Option(help="Ignore where the last replay stopped.")] = False,
) -> None:
    """Re-validate and replay dead letters; resumable, and safe to repeat (upserts are idempotent)."""
    from mds_sink.dlq_io import replay  # noqa: PLC0415

    s = settings()
    try:
        summary = replay(
            s,
            _filters(reason, topic, tenant, since, until, min_offset, max_offset),
            dry_run=dry_run,
            rate_per_s=rate,
            max_replays=max_replays,
            direct=direct,
            from_beginning=from_beginning,
        )
    except BrokerUnavailable as exc:
        raise fail(str(exc), 1) from None
    typer.echo(summary.line())


@app.command()
def demo() -> None:
    """Run the demo against the local stack: migrate, add tenants, sink the sample stream, show it."""
    from mds_sink.demo import run_demo  # noqa: PLC0415

    s = settings()
    try:
        run_demo(s)
    except StartupError as exc:
        raise fail(str(exc)) from None


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"mds-sink: {exc}", err=True)
        sys.exit(2)


logging.captureWarnings(True)
