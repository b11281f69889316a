"""`mds-sink admin tenants`: bad input is one line and exit 2, nothing renames by accident, and the
destructive commands confirm naming what they affect (refused without a terminal unless --yes)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from mds_sink.config.settings import Settings, load_settings
from tests.control import cli
from tests.throwaway import migrated, owner_url, with_user

A = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def db() -> Iterator[Settings]:
    base = load_settings()
    with migrated(base, owner_url(base)) as s:
        yield s


def names(s: Settings) -> list[tuple[str, str, bool]]:
    with psycopg.connect(owner_url(s)) as conn:
        return [(str(t), n, a) for t, n, a in conn.execute("SELECT tenant_id, name, active FROM tenants ORDER BY name")]


def test_add_is_idempotent_and_never_renames(db: Settings) -> None:
    assert cli(db, "admin", "tenants", "add", "acme", "--id", A).stdout == f"{A}  acme  active\n"
    again = cli(db, "admin", "tenants", "add", "acme", "--id", A)
    assert (again.exit_code, again.stdout) == (0, f"{A}  acme  active  (exists already; unchanged)\n")
    renamed = cli(db, "admin", "tenants", "add", "acme-new", "--id", A)
    assert (renamed.exit_code, renamed.stderr) == (
        2,
        f"mds-sink: tenant {A} exists, named 'acme'; `admin tenants rename` renames it\n",
    )
    taken = cli(db, "admin", "tenants", "add", "acme", "--id", str(uuid.uuid4()))
    assert (taken.exit_code, taken.stderr) == (2, f"mds-sink: tenant name 'acme' is taken by tenant {A}\n")
    assert [(t, n) for t, n, _ in names(db) if t == A] == [(A, "acme")]
    done = cli(db, "admin", "tenants", "rename", "acme", "acme-corp")
    assert done.stdout == f"{A}  acme-corp  active  (was 'acme')\n"
    cli(db, "admin", "tenants", "rename", A, "acme")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "tenant name is empty"),
        ("   ", "tenant name is empty"),
        ("x" * 201, "tenant name is 201 characters long; at most 200"),
        ("evil\nname", "tenant name holds a control or format character (U+000A); use printable text"),
        ("\x1b[31mred", "tenant name holds a control or format character (U+001B); use printable text"),
        ("abc\u202edcb", "tenant name holds a control or format character (U+202E); use printable text"),
        (str(uuid.uuid4()), "is a UUID; a name must not read as a tenant id"),
    ],
)
def test_a_bad_name_is_one_line(db: Settings, name: str, error: str) -> None:
    for args in (("add", name), ("rename", A, name)):
        result = cli(db, "admin", "tenants", *args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("mds-sink: ") and result.stderr.count("\n") == 1
        assert error in result.stderr


def test_disable_confirms_naming_the_tenant_and_needs_yes_without_a_terminal(db: Settings) -> None:
    refused = cli(db, "admin", "tenants", "disable", "acme")
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"mds-sink: disable tenant 'acme' ({A}): every record of it is dead-lettered (`inactive_tenant`) until it "
        "is enabled again; no terminal to ask on: pass --yes to confirm\n"
    )
    assert (A, "acme", True) in names(db)
    assert cli(db, "admin", "tenants", "disable", "acme", "--yes").stdout == f"{A}  acme  disabled\n"
    assert cli(db, "admin", "tenants", "enable", A).stdout == f"{A}  acme  active\n"
    unknown = cli(db, "admin", "tenants", "disable", "nobody", "--yes")
    assert (unknown.exit_code, unknown.stderr) == (2, "mds-sink: no tenant with id or name 'nobody'\n")


def test_a_reader_credential_is_created_rotated_and_dropped_from_the_command_line(db: Settings) -> None:
    roles = {"MDS_SINK_DATABASE__ROLES_URL": os.environ["MDS_SINK_DATABASE__ROLES_URL"]}
    made = cli(db, "admin", "tenants", "reader", "create", "acme", "--json", **roles)
    assert made.exit_code == 0, made.output
    cred = json.loads(made.stdout)
    assert (cred["tenant_id"], cred["tenant"]) == (A, "acme") and cred["role"].startswith("mds_tenant_")
    url = with_user(owner_url(db), cred["role"], cred["password"])
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT tenant_view.bound_tenant(current_user)::text").fetchone() == (A,)
    listed = cli(db, "admin", "tenants", "reader", "list", "--json")
    assert [(r["role"], r["tenant"]) for r in json.loads(listed.stdout)] == [(cred["role"], "acme")]
    rotated = json.loads(cli(db, "admin", "tenants", "reader", "rotate", cred["role"], "--json", **roles).stdout)
    assert rotated["password"] != cred["password"]
    refused = cli(db, "admin", "tenants", "reader", "drop", cred["role"], **roles)
    assert refused.exit_code == 2 and "no terminal to ask on: pass --yes to confirm" in refused.stderr
    assert f"drop role {cred['role']}, the reader of tenant 'acme' ({A})" in refused.stderr
    dropped = cli(db, "admin", "tenants", "reader", "drop", cred["role"], "--yes", **roles)
    assert dropped.stdout == f"dropped role {cred['role']} (reader of tenant 'acme')\n"
    gone = cli(db, "admin", "tenants", "reader", "rotate", cred["role"], **roles)
    assert gone.stderr == (
        f"mds-sink: role {cred['role']!r} is not a tenant reader (`admin tenants reader list` lists them)\n"
    )


def test_without_createrole_a_reader_is_refused_in_one_line(db: Settings) -> None:
    owner_only = {"MDS_SINK_DATABASE__ROLES_URL": owner_url(db)}  # the owner has no CREATEROLE
    no_role = cli(db, "admin", "tenants", "reader", "create", "acme", **owner_only)
    assert (no_role.exit_code, no_role.stderr) == (
        2,
        "mds-sink: creating a login role needs CREATEROLE: set database.roles_url (MDS_SINK_DATABASE__ROLES_URL) "
        "to a role that has it (docs/tenant-security.md)\n",
    )
    bad = cli(db, "admin", "tenants", "reader", "create", "acme", "--role", "Robert'); DROP", **owner_only)
    assert bad.exit_code == 2 and "use 1-63 lower-case letters, digits and _" in bad.stderr
