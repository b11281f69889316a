"""`mds-sink admin tenants`: tenants, their reader credentials and the trusted gateway roles.

Every command runs as the owner (`database.owner_url`); creating, rotating and dropping a login role
also needs a role with CREATEROLE (`database.roles_url`, default the owner's URL). Bad input (a
duplicate, empty, over-long or control-character name, an unknown tenant) is one line and exit 2.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from mds_sink.cli.common import confirm, fail, owner_url, settings
from mds_sink.cli.render import json_rows, table
from mds_sink.config.settings import Settings
from mds_sink.errors import InputError

T = TypeVar("T")

tenants_app = typer.Typer(no_args_is_help=True, help="Tenants whose data the sink accepts, and who may read them.")
reader_app = typer.Typer(no_args_is_help=True, help="Login roles that read one tenant only (tenant_view).")
gateway_app = typer.Typer(
    no_args_is_help=True, help="Roles trusted to read any tenant they name with app.tenant_id (a gateway)."
)
tenants_app.add_typer(reader_app, name="reader")
tenants_app.add_typer(gateway_app, name="gateway")

YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _run(action: Callable[[], T], s: Settings) -> T:
    """The action's result; bad input or an unreachable database is one line."""
    try:
        return action()
    except InputError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        from mds_sink.db.dsn import unreachable  # noqa: PLC0415

        reason = unreachable(owner_url(s), exc)
        if reason is not None:
            raise fail(reason, 1) from None
        raise


def _roles_url(s: Settings) -> str:
    return s.database.roles_url.get_secret_value() if s.database.roles_url is not None else owner_url(s)


# -- the tenants table --------------------------------------------------------------------------------
@tenants_app.command("add")
def tenants_add(
    name: str,
    tenant_id: Annotated[str | None, typer.Option("--id", help="UUID; a new one when omitted.")] = None,
) -> None:
    """Add a tenant (active). Adding the same id and name again changes nothing; it never renames."""
    from mds_sink.control import tenants  # noqa: PLC0415  (psycopg only for the commands using it)

    s = settings()
    try:
        tid = uuid.UUID(tenant_id) if tenant_id else uuid.uuid4()
    except ValueError:
        raise fail(f"--id {tenant_id!r} is not a UUID") from None
    tenant, added = _run(lambda: tenants.add(owner_url(s), name, tid), s)
    typer.echo(tenant.describe() + ("" if added else "  (exists already; unchanged)"))


@tenants_app.command("rename")
def tenants_rename(tenant: str, new_name: str) -> None:
    """Rename a tenant (by id or name). Its id, its rows and its readers stay as they are."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    renamed, old = _run(lambda: tenants.rename(owner_url(s), tenant, new_name), s)
    typer.echo(f"{renamed.describe()}  (was {old!r})")


@tenants_app.command("list")
def tenants_list(as_json: JsonOption = False) -> None:
    """List tenants."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    found = _run(lambda: tenants.list_all(owner_url(s)), s)
    if as_json:
        typer.echo(
            json.dumps([{"tenant_id": t.tenant_id, "name": t.name, "active": t.active} for t in found], indent=2)
        )
        return
    for t in found:
        typer.echo(t.describe())


@tenants_app.command("disable")
def tenants_disable(tenant: str, yes: YesOption = False) -> None:
    """Disable a tenant (by id or name): its records are dead-lettered from then on."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    found = _run(lambda: tenants.find(owner_url(s), tenant), s)
    if not found.active:
        typer.echo(f"{found.describe()}  (disabled already)")
        return
    confirm(
        f"disable tenant {found.name!r} ({found.tenant_id}): every record of it is dead-lettered "
        "(`inactive_tenant`) until it is enabled again",
        yes,
    )
    typer.echo(_run(lambda: tenants.set_active(owner_url(s), found.tenant_id, False), s).describe())


@tenants_app.command("enable")
def tenants_enable(tenant: str) -> None:
    """Enable a tenant again (by id or name)."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    typer.echo(_run(lambda: tenants.set_active(owner_url(s), tenant, True), s).describe())


# -- tenant readers -------------------------------------------------------------------------------------
def _show_credential(cred: object, as_json: bool, what: str) -> None:
    from mds_sink.control.tenants import Credential  # noqa: PLC0415

    assert isinstance(cred, Credential)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "role": cred.role,
                    "password": cred.password,
                    "tenant_id": cred.tenant.tenant_id,
                    "tenant": cred.tenant.name,
                },
                indent=2,
            )
        )
        return
    typer.echo(f"{what} role {cred.role} for tenant {cred.tenant.name!r} ({cred.tenant.tenant_id})")
    typer.echo(f"password: {cred.password}")
    typer.echo("(shown once: only its SCRAM verifier is stored)")


@reader_app.command("create")
def reader_create(
    tenant: str,
    role: Annotated[str | None, typer.Option("--role", help="Role name; default mds_tenant_<random>.")] = None,
    as_json: JsonOption = False,
) -> None:
    """A login role that reads TENANT (id or name) only, with a new password printed once."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    cred = _run(lambda: tenants.create_reader(owner_url(s), _roles_url(s), tenant, role), s)
    _show_credential(cred, as_json, "created")


@reader_app.command("rotate")
def reader_rotate(role: str, as_json: JsonOption = False) -> None:
    """A new password for a tenant reader role (sessions already open stay open until they end)."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    cred = _run(lambda: tenants.rotate_reader(owner_url(s), _roles_url(s), role), s)
    _show_credential(cred, as_json, "rotated")


@reader_app.command("drop")
def reader_drop(role: str, yes: YesOption = False) -> None:
    """Unbind a tenant reader role, revoke what it may read and drop it."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    found = _run(lambda: tenants.reader(owner_url(s), role), s)
    confirm(
        f"drop role {found.role}, the reader of tenant {found.tenant!r} ({found.tenant_id}): whoever logs in "
        "with it can no longer connect; open sessions see nothing from now on",
        yes,
    )
    _run(lambda: tenants.drop_reader(owner_url(s), _roles_url(s), role), s)
    typer.echo(f"dropped role {found.role} (reader of tenant {found.tenant!r})")


@reader_app.command("list")
def reader_list(as_json: JsonOption = False) -> None:
    """The tenant reader roles and the tenant each reads."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    found = _run(lambda: tenants.list_readers(owner_url(s)), s)
    header = ("role", "tenant_id", "tenant", "created_at", "rotated_at")
    rows = [(r.role, r.tenant_id, r.tenant, r.created_at, r.rotated_at) for r in found]
    typer.echo(json_rows(header, rows) if as_json else table(header, rows, count=True))


# -- trusted roles -------------------------------------------------------------------------------------
@gateway_app.command("list")
def gateway_list(as_json: JsonOption = False) -> None:
    """Roles that choose their tenant with app.tenant_id: owner, writer and gateway readers."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    rows = _run(lambda: tenants.list_context_roles(owner_url(s)), s)
    typer.echo(json_rows(("role", "purpose"), rows) if as_json else table(("role", "purpose"), rows))


@gateway_app.command("add")
def gateway_add(role: str, yes: YesOption = False) -> None:
    """Trust ROLE to read every tenant it names (a service that authenticates tenants itself)."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    confirm(f"trust role {role!r} to read every tenant's rows and every tenant id", yes)
    _run(lambda: tenants.add_gateway(owner_url(s), role), s)
    typer.echo(f"role {role} is a gateway reader: it reads the tenant it sets in app.tenant_id")


@gateway_app.command("remove")
def gateway_remove(role: str, yes: YesOption = False) -> None:
    """Stop trusting ROLE: it sees no tenant's rows and no tenant id from its next statement on."""
    from mds_sink.control import tenants  # noqa: PLC0415

    s = settings()
    confirm(f"role {role!r} will read no tenant any more (whatever uses it as a gateway stops seeing rows)", yes)
    if not _run(lambda: tenants.remove_gateway(owner_url(s), role), s):
        raise fail(f"role {role!r} is not a gateway reader (`admin tenants gateway list`)", 1)
    typer.echo(f"role {role} is no gateway any more")
