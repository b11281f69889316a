"""`mds-sink admin policies|aggregates|retention` and `mds-sink query`: the control plane's commands.

Thin: each command loads settings, opens one connection, and hands over to policies (plan, pure),
policy_db (catalogs, apply, refresh), retention or query; what it prints is what changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mds_sink.cli import render
from mds_sink.cli.common import fail, settings
from mds_sink.config.settings import Settings
from mds_sink.control import aggregates, policies
from mds_sink.control.policies import Change, DatabaseState, Plan
from mds_sink.errors import QueryError, SettingsError, StartupError

# psycopg and the modules that talk to the database are imported by the commands that run: `--help`
# and every other command start without them.
if TYPE_CHECKING:
    import psycopg

    from mds_sink.control.query import Result

policies_app = typer.Typer(no_args_is_help=True, help="TimescaleDB hypertables, compression and isolation modes.")
aggregates_app = typer.Typer(no_args_is_help=True, help="Continuous aggregates (5m, 1h, 1d bars from 1m bars).")
retention_app = typer.Typer(no_args_is_help=True, help="Retention of old rows.")
query_app = typer.Typer(no_args_is_help=True, help="Read helpers for operators, as the read-only role.")

JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
_WHEN = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _reader_url(s: Settings) -> str:
    if s.database.reader_url is None:
        raise fail("invalid setting database.reader_url (MDS_SINK_DATABASE__READER_URL): required for this command")
    return s.database.reader_url.get_secret_value()


@contextmanager
def _owner(s: Settings, *, lock: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """The owner connection the control API uses too, its failures as one line."""
    from mds_sink.control.actions import owner_connection  # noqa: PLC0415  (psycopg only when connecting)

    try:
        with owner_connection(s, lock=lock, purpose="for this command") as conn:
            yield conn
    except SettingsError as exc:
        raise fail(str(exc)) from None
    except StartupError as exc:
        raise fail(str(exc), 1) from None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- admin policies ---------------------------------------------------------------------------------
def _print_change(change: Change) -> None:
    typer.echo(f"{change.target}: {change.what}")


def _plan(conn: psycopg.Connection[Any], s: Settings) -> tuple[DatabaseState, Plan]:
    from mds_sink.control import policy_db  # noqa: PLC0415

    state = policy_db.read_state(conn, reader=s.database.reader_role)
    return state, policies.plan(state, s.policies, reader=s.database.reader_role)


@policies_app.command("apply")
def policies_apply(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the changes, make none.")] = False,
) -> None:
    """Bring hypertables, compression, retention and aggregates in line with the settings (idempotent)."""
    import psycopg  # noqa: PLC0415

    from mds_sink.control import policy_db  # noqa: PLC0415

    s = settings()
    with _owner(s, lock=True) as conn:
        _, plan = _plan(conn, s)
        if dry_run:
            for change in plan.changes:
                typer.echo(f"would change {change.target}: {change.what}")
        else:
            try:
                policy_db.apply_plan(conn, plan, lock_timeout_s=s.policies.lock_timeout_s, done=_print_change)
            except psycopg.errors.LockNotAvailable:
                raise fail(
                    f"a table stayed locked for {s.policies.lock_timeout_s:g}s (policies.lock_timeout_s): "
                    "nothing of that table changed; run again",
                    1,
                ) from None
            except psycopg.Error as exc:
                raise fail(
                    f"{str(exc).splitlines()[0]}: the changes of that table were rolled back (those printed above "
                    "are committed)",
                    1,
                ) from None
    for note in plan.notes:
        typer.echo(f"note: {note}")
    if not plan.changes:
        typer.echo("nothing to change: the database matches the policy settings")


def _state_rows(state: DatabaseState, s: Settings) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, table in sorted(state.tables.items()):
        want = s.policies.tables().get(name)
        rows.append(
            {
                "table": name,
                "isolation": table.isolation.describe(),
                "reader_on_table": table.isolation.reader_on_table,
                "hypertable": table.hypertable,
                "chunk_interval": str(table.chunk_interval) if table.chunk_interval else None,
                "compression": (
                    f"segment by {', '.join(table.segmentby)}; order by {', '.join(table.orderby)}"
                    if table.compression
                    else None
                ),
                "compress_after": str(table.compress_after) if table.compress_after else None,
                "retention": (
                    str(table.keep)
                    if table.keep
                    else f"{want.keep} (admin retention apply)"
                    if want is not None and want.keep is not None and state.timescaledb is None
                    else None
                ),
            }
        )
    return rows


@policies_app.command("show")
def policies_show(as_json: JsonOption = False) -> None:
    """The database's isolation modes, chunking, compression, retention and aggregates, and what apply would change."""
    s = settings()
    with _owner(s) as conn:
        state, plan = _plan(conn, s)
    tables = _state_rows(state, s)
    aggs = [
        {
            "aggregate": a.name,
            "kind": a.kind,
            "tenant_view": a.tenant_view,
            "refresh": (
                f"every {a.refresh.schedule_interval}, window [now - {a.refresh.start_offset}, "
                f"now - {a.refresh.end_offset})"
                if a.refresh
                else None
            ),
        }
        for a in sorted(state.aggregates.values(), key=lambda a: a.name)
    ]
    pending = [{"target": c.target, "change": c.what} for c in plan.changes]
    failed = [
        {"job_id": j.job_id, "proc": j.proc, "target": j.target, "failures": j.failures,
         "last_run_status": j.last_status, "last_error": j.last_error}
        for j in state.failed_jobs
    ]  # fmt: skip
    if as_json:
        out = {"timescaledb": state.timescaledb, "tables": tables, "aggregates": aggs, "pending": pending}
        typer.echo(json.dumps({**out, "failed_jobs": failed, "notes": list(plan.notes)}, indent=2))
        return
    typer.echo(f"timescaledb: {state.timescaledb or 'not installed in this database'}")
    for rows in (tables, aggs):
        if rows:
            columns = tuple(rows[0])
            typer.echo(render.table(columns, [tuple(r[c] for c in columns) for r in rows]))
    if not aggs:
        typer.echo("aggregates: none (admin policies apply creates them)")
    for job in state.failed_jobs:
        # e.g. "failed to start a background worker": max_worker_processes and
        # timescaledb.max_background_workers too low for the jobs (docs/timescaledb.md).
        typer.echo(f"failed {job.describe()}")
    for p in pending:
        typer.echo(f"pending {p['target']}: {p['change']}")
    for note in plan.notes:
        typer.echo(f"note: {note}")
    if not pending:
        typer.echo("nothing pending: the database matches the policy settings")


# -- admin aggregates -------------------------------------------------------------------------------
@aggregates_app.command("refresh")
def aggregates_refresh(
    start: Annotated[datetime, typer.Option("--from", formats=_WHEN, help="Window start (UTC unless given).")],
    end: Annotated[datetime, typer.Option("--to", formats=_WHEN, help="Window end, exclusive.")],
    only: Annotated[list[str] | None, typer.Option("--aggregate", help="bars_5m, bars_1h or bars_1d.")] = None,
) -> None:
    """Materialize the aggregates over [--from, --to) now, e.g. after corrections to old bars."""
    import psycopg  # noqa: PLC0415

    from mds_sink.control import policy_db  # noqa: PLC0415

    s = settings()
    names = [a.name for a in aggregates.AGGREGATES]
    for name in only or ():
        if name not in names:
            raise fail(f"--aggregate {name!r}: expected one of {', '.join(names)}")
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise fail("--to must be after --from")
    with _owner(s) as conn:
        state = policy_db.read_state(conn, reader=s.database.reader_role)
        wanted = [n for n in names if not only or n in only]
        missing = [n for n in wanted if n not in state.aggregates]
        if missing:
            raise fail(f"{', '.join(missing)} do not exist yet: run `mds-sink admin policies apply`", 1)
        plain = [n for n in wanted if state.aggregates[n].kind != "continuous"]
        if plain:
            typer.echo(
                f"{', '.join(plain)}: plain views computed when read (no TimescaleDB): nothing to refresh, "
                "they always show the current bars"
            )
        continuous = [n for n in wanted if n not in plain]
        window = f"[{start.isoformat()}, {end.isoformat()})"
        try:
            policy_db.refresh_aggregates(conn, continuous, start, end, lambda n: typer.echo(f"{n}: refreshed {window}"))
        except psycopg.Error as exc:
            raise fail(f"refresh failed: {str(exc).splitlines()[0]}", 1) from None


# -- admin retention --------------------------------------------------------------------------------
@retention_app.command("apply")
def retention_apply() -> None:
    """Remove rows older than each table's `keep` now (TimescaleDB: drop chunks; else batched deletes)."""
    from mds_sink.control import policy_db, retention  # noqa: PLC0415

    s = settings()
    with _owner(s) as conn:
        state = policy_db.read_state(conn, reader=s.database.reader_role)
        hypertables = None if state.timescaledb is None else {t.name for t in state.tables.values() if t.hypertable}
        tasks = retention.retention_tasks(s.policies, hypertables)
        if hypertables is None:
            typer.echo(f"no TimescaleDB: deleting old rows in batches of {s.policies.retention_batch_rows}")
        retention.run_retention(
            conn, tasks, batch_rows=s.policies.retention_batch_rows, done=lambda r: typer.echo(r.describe())
        )
    kept = sorted(set(s.policies.tables()) - {t.table for t in tasks})
    if kept:
        typer.echo(f"kept forever (no keep setting): {', '.join(kept)}")


# -- query ------------------------------------------------------------------------------------------
TENANT_HELP = "Tenant name or UUID; with a tenant reader's credential its own tenant (may be omitted)."


def _show(result: Result, as_json: bool) -> None:
    typer.echo(
        render.json_rows(result.columns, result.rows)
        if as_json
        else render.table(result.columns, result.rows, count=True)
    )


@query_app.command("latest-prices")
def query_latest_prices(
    symbols: Annotated[str, typer.Option("--symbols", help="Comma-separated, e.g. AAPL,MSFT.")],
    tenant: Annotated[str | None, typer.Option("--tenant", help=TENANT_HELP)] = None,
    vendor: Annotated[str | None, typer.Option("--vendor")] = None,
    as_json: JsonOption = False,
) -> None:
    """Latest price per vendor and symbol of one tenant."""
    from mds_sink.control import query  # noqa: PLC0415

    s = settings()
    try:
        result = query.latest_prices(_reader_url(s), tenant, query.normalise_symbols(symbols), vendor)
    except QueryError as exc:
        raise fail(str(exc), 1) from None
    _show(result, as_json)


@query_app.command("bars")
def query_bars(
    symbol: Annotated[str, typer.Option("--symbol")],
    start: Annotated[datetime, typer.Option("--from", formats=_WHEN, help="UTC unless given.")],
    end: Annotated[datetime, typer.Option("--to", formats=_WHEN, help="Exclusive.")],
    tenant: Annotated[str | None, typer.Option("--tenant", help=TENANT_HELP)] = None,
    timeframe: Annotated[str, typer.Option("--timeframe")] = "1m",
    vendor: Annotated[str | None, typer.Option("--vendor")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 10_000,
    as_json: JsonOption = False,
) -> None:
    """Bars of one tenant and symbol in [--from, --to), oldest first."""
    from mds_sink.control import query  # noqa: PLC0415

    s = settings()
    try:
        result = query.bars(
            _reader_url(s),
            tenant,
            symbol=symbol,
            timeframe=timeframe,
            start=_utc(start),
            end=_utc(end),
            vendor=vendor,
            limit=limit,
        )
    except QueryError as exc:
        raise fail(str(exc), 1) from None
    _show(result, as_json)


@query_app.command("gaps")
def query_gaps(
    tenant: Annotated[str | None, typer.Option("--tenant", help=TENANT_HELP)] = None,
    symbol: Annotated[str | None, typer.Option("--symbol")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe")] = None,
    vendor: Annotated[str | None, typer.Option("--vendor")] = None,
    include_closed: Annotated[bool, typer.Option("--all", help="Closed gaps too: the history of holes.")] = False,
    since: Annotated[
        datetime | None, typer.Option("--since", formats=_WHEN, help="Only gaps ending after this (UTC unless given).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 10_000,
    as_json: JsonOption = False,
) -> None:
    """Bars missing in trading sessions (bar_gaps) of one tenant: open gaps, or with --all every gap."""
    from mds_sink.control import query  # noqa: PLC0415

    s = settings()
    try:
        result = query.gaps(
            _reader_url(s),
            tenant,
            symbol=symbol,
            timeframe=timeframe,
            vendor=vendor,
            include_closed=include_closed,
            since=None if since is None else _utc(since),
            limit=limit,
        )
    except QueryError as exc:
        raise fail(str(exc), 1) from None
    _show(result, as_json)
