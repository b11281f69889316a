"""`mds-sink admin`: migrations and tenants (policies, aggregates and retention live in control_cli)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from mds_sink.cli.common import fail, owner_url, settings
from mds_sink.cli.control import aggregates_app, policies_app, retention_app
from mds_sink.config.settings import Settings
from mds_sink.db import migrate
from mds_sink.errors import SettingsError

T = TypeVar("T")

admin_app = typer.Typer(no_args_is_help=True, help="Schema, policies and tenants of the sink's database.")
tenants_app = typer.Typer(no_args_is_help=True, help="Tenants whose data the sink accepts.")
admin_app.add_typer(tenants_app, name="tenants")
admin_app.add_typer(policies_app, name="policies")
admin_app.add_typer(aggregates_app, name="aggregates")
admin_app.add_typer(retention_app, name="retention")


# -- migrations ------------------------------------------------------------------------------
@admin_app.command("migrate")
def admin_migrate(to: Annotated[str, typer.Option("--to", help="Target revision.")] = "head") -> None:
    """Upgrade the database schema (to head by default). Concurrent runs wait for each other."""
    _move_schema(lambda s: migrate.upgrade(s, to))


@admin_app.command("downgrade")
def admin_downgrade(revision: str) -> None:
    """Downgrade the database schema to REVISION (`base` removes everything)."""
    _move_schema(lambda s: migrate.downgrade(s, revision))


def _move_schema(step: Callable[[Settings], None]) -> None:
    """Run an upgrade or downgrade, each revision it passes logged, and print where the schema is."""
    s = settings()
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
    except SettingsError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        from mds_sink.db.dsn import unreachable  # noqa: PLC0415

        reason = unreachable(owner_url(s), exc)
        if reason is not None:
            raise fail(reason) from None
        raise


# -- admin: tenants ---------------------------------------------------------------------------------
@tenants_app.command("add")
def tenants_add(
    name: str,
    tenant_id: Annotated[str | None, typer.Option("--id", help="UUID; a new one when omitted.")] = None,
) -> None:
    """Add a tenant (active)."""
    from mds_sink.control import tenants  # noqa: PLC0415  (psycopg only for the commands using it)

    s = settings()
    try:
        tid = uuid.UUID(tenant_id) if tenant_id else uuid.uuid4()
    except ValueError:
        raise fail(f"--id {tenant_id!r} is not a UUID") from None
    typer.echo(tenants.add(owner_url(s), name, tid).describe())


@tenants_app.command("list")
def tenants_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List tenants."""
    from mds_sink.control import tenants  # noqa: PLC0415

    found = tenants.list_all(owner_url(settings()))
    if as_json:
        typer.echo(
            json.dumps([{"tenant_id": t.tenant_id, "name": t.name, "active": t.active} for t in found], indent=2)
        )
        return
    for t in found:
        typer.echo(t.describe())


def _set_active(tenant: str, active: bool) -> None:
    from mds_sink.control import tenants  # noqa: PLC0415

    changed = tenants.set_active(owner_url(settings()), tenant, active)
    if changed is None:
        raise fail(f"no tenant with id or name {tenant!r}", 1)
    typer.echo(changed.describe())


@tenants_app.command("disable")
def tenants_disable(tenant: str) -> None:
    """Disable a tenant (by id or name): its records are dead-lettered from then on."""
    _set_active(tenant, False)


@tenants_app.command("enable")
def tenants_enable(tenant: str) -> None:
    """Enable a tenant again (by id or name)."""
    _set_active(tenant, True)
