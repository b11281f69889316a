"""`mds-sink admin`: migrations and tenants (policies, aggregates and retention live in control_cli)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from mds_sink.cli.common import confirm, fail, owner_url, settings
from mds_sink.cli.control import aggregates_app, policies_app, retention_app
from mds_sink.cli.serve import serve
from mds_sink.cli.tenants import tenants_app
from mds_sink.config.settings import Settings
from mds_sink.db import migrate
from mds_sink.errors import MigrationError, SettingsError

T = TypeVar("T")

admin_app = typer.Typer(no_args_is_help=True, help="Schema, policies and tenants of the sink's database.")
admin_app.add_typer(tenants_app, name="tenants")
admin_app.add_typer(policies_app, name="policies")
admin_app.add_typer(aggregates_app, name="aggregates")
admin_app.add_typer(retention_app, name="retention")
admin_app.command("serve")(serve)


# -- migrations ------------------------------------------------------------------------------
@admin_app.command("migrate")
def admin_migrate(to: Annotated[str, typer.Option("--to", help="Target revision.")] = "head") -> None:
    """Upgrade the database schema (to head by default). Concurrent runs wait for each other."""
    _move_schema(lambda s: migrate.upgrade(s, to), settings())


@admin_app.command("downgrade")
def admin_downgrade(
    revision: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask: data will be lost.")] = False
) -> None:
    """Downgrade the database schema to REVISION (`base` removes every table and row)."""
    s = settings()
    current = _guard(lambda: migrate.current_revision(s), s)
    undone = _guard(lambda: migrate.undone_by_downgrade(s, current, revision), s)
    if not undone:
        typer.echo(f"database at revision {current or '(none)'}: nothing to downgrade to {revision}")
        return
    rows = _guard(lambda: migrate.table_rows(s), s)
    held = ", ".join(f"{name} {'?' if n is None else f'{n:,}'}" for name, n in rows.items() if n != 0)
    steps = "; ".join(f"{rev} {doc}".strip() for rev, doc in undone)
    confirm(
        f"downgrade {current} -> {revision} undoes {len(undone)} migration(s) ({steps}) and drops what they "
        f"created{'' if revision != 'base' else ': every table'}; rows now: {held or 'none'}",
        yes,
    )
    _move_schema(lambda s: migrate.downgrade(s, revision), s)


def _move_schema(step: Callable[[Settings], None], s: Settings) -> None:
    """Run an upgrade or downgrade, each revision it passes logged, and print where the schema is."""
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    _guard(lambda: step(s), s)
    typer.echo(f"database at revision {migrate.current_revision(s)}")


@admin_app.command("stamp")
def admin_stamp(revision: str) -> None:
    """Record REVISION as current without running migrations."""
    s = settings()
    _guard(lambda: migrate.stamp(s, revision), s)
    typer.echo(f"database stamped at {migrate.current_revision(s)}")


@admin_app.command("current")
def admin_current() -> None:
    """Print the database's schema revision."""
    s = settings()
    rev = _guard(lambda: migrate.current_revision(s), s)
    head = migrate.head_revision(s)
    typer.echo(f"{rev or '(none)'}{' (head)' if rev == head else f' (head is {head})'}")


@admin_app.command("check")
def admin_check() -> None:
    """Exit 0 if the database is at the code's head revision, 1 otherwise."""
    s = settings()
    current = _guard(lambda: migrate.current_revision(s), s)
    head = migrate.head_revision(s)
    if current != head:
        typer.echo(f"database at {current or '(none)'}, code needs {head}: run `mds-sink admin migrate`")
        raise typer.Exit(1)
    typer.echo(f"database at head ({head})")


@admin_app.command("history")
def admin_history() -> None:
    """List the migrations, oldest first."""
    s = settings()
    for rev, down, doc in migrate.history(s):
        typer.echo(f"{down or '<base>'} -> {rev}  {doc}")


def _guard(action: Callable[[], T], s: Settings) -> T:
    """The action's result; an unreachable database or a wrong setting is one line and exit 1."""
    try:
        return action()
    except (SettingsError, MigrationError) as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        from mds_sink.db.dsn import unreachable  # noqa: PLC0415

        reason = unreachable(owner_url(s), exc)
        if reason is not None:
            raise fail(reason, 1) from None
        raise
