"""Tenants and their credentials, as the owner role keeps them.

- The tenants table: add (never renames), rename, list, enable and disable.
- Tenant readers (migration 0007): a login role bound to one tenant. `tenant_view` shows it that
  tenant whatever `app.tenant_id` it sets. Creating, rotating and dropping the role needs CREATEROLE,
  which the owner should not hold (on PostgreSQL 15 it is almost superuser): those statements run on
  the roles connection (`database.roles_url`); the grants and the binding run as the owner.
- Gateway readers: roles trusted to choose any tenant with `app.tenant_id` (the shared reader).

Names are checked here (pure) so that bad input is one line, never a database error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from mds_sink.errors import InputError

NAME_MAX = 200  # as the tenants table's CHECK
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ROLE_PREFIX = "mds_tenant_"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)

ADD = "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING tenant_id::text"
FIND = "SELECT tenant_id::text, name, active FROM tenants WHERE tenant_id = %s OR name = %s ORDER BY tenant_id"
ADD_MISSING = "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING"
LIST = "SELECT tenant_id::text, name, active FROM tenants ORDER BY name"
RETURNING = " RETURNING tenant_id::text, name, active"
SET_ACTIVE = "UPDATE tenants SET active = %s, updated_at = now() WHERE tenant_id = %s" + RETURNING
RENAME = "UPDATE tenants SET name = %s, updated_at = now() WHERE tenant_id = %s" + RETURNING

READERS = (
    "SELECT r.role_name::text, r.tenant_id::text, t.name, r.created_at, r.rotated_at FROM tenant_readers r "
    "JOIN tenants t USING (tenant_id) ORDER BY t.name, r.role_name"
)
GATEWAYS = "SELECT role_name::text, purpose FROM tenant_context_roles ORDER BY purpose, role_name"


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    active: bool

    def describe(self) -> str:
        return f"{self.tenant_id}  {self.name}  {'active' if self.active else 'disabled'}"


@dataclass(frozen=True, slots=True)
class Reader:
    role: str
    tenant_id: str
    tenant: str
    created_at: Any
    rotated_at: Any


@dataclass(frozen=True, slots=True)
class Credential:
    """A reader's login, shown once: the password is not stored anywhere but in its SCRAM verifier."""

    role: str
    password: str
    tenant: Tenant


# -- checks (pure) ------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """A tenant name as stored, or InputError naming what is wrong with it."""
    if not name or not name.strip():
        raise InputError("tenant name is empty")
    if name != name.strip():
        raise InputError(f"tenant name {name.strip()[:40]!r}... has leading or trailing spaces")
    if len(name) > NAME_MAX:
        raise InputError(f"tenant name is {len(name)} characters long; at most {NAME_MAX}")
    bad = next((c for c in name if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}), None)
    if bad is not None:
        # Newlines, escape codes, bidi overrides: they would forge lines and colours in listings and logs.
        raise InputError(f"tenant name holds a control or format character (U+{ord(bad):04X}); use printable text")
    if _as_uuid(name) is not None:
        # `tenants disable X` takes an id or a name: a name that reads as an id could name another tenant.
        raise InputError(f"tenant name {name!r} is a UUID; a name must not read as a tenant id")
    return name


def check_role(role: str) -> str:
    if not ROLE_NAME.match(role):
        raise InputError(f"role name {role!r}: use 1-63 lower-case letters, digits and _, not starting with a digit")
    if role.startswith("pg_") or role in {"public", "none", "current_user", "session_user", "current_role"}:
        raise InputError(f"role name {role!r} is reserved by PostgreSQL")
    return role


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5803 form), computed here so that the password
    itself never reaches the server, its statement log or pg_stat_activity."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


# -- the tenants table ------------------------------------------------------------------------------
def _tenant(row: tuple[Any, ...]) -> Tenant:
    return Tenant(str(row[0]), str(row[1]), bool(row[2]))


def resolve(conn: psycopg.Connection[Any], reference: str) -> Tenant:
    """The one tenant with this id or name; InputError if there is none."""
    tid = _as_uuid(reference)
    rows = conn.execute(FIND, (tid, reference)).fetchall()
    if tid is not None:
        rows = [r for r in rows if r[0] == str(tid)]
    if not rows:
        raise InputError(f"no tenant with id or name {reference!r}")
    return _tenant(rows[0])


def add(owner_url: str, name: str, tenant_id: uuid.UUID) -> tuple[Tenant, bool]:
    """The tenant, and whether it was added now. Adding it again (same id, same name) changes nothing;
    an id or a name already taken by another is refused: renaming is `rename`."""
    check_name(name)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        if conn.execute(ADD, (tenant_id, name)).fetchone() is not None:
            return Tenant(str(tenant_id), name, True), True
        for found in map(_tenant, conn.execute(FIND, (tenant_id, name)).fetchall()):
            if found.tenant_id == str(tenant_id) and found.name == name:
                return found, False
            if found.tenant_id == str(tenant_id):
                raise InputError(f"tenant {tenant_id} exists, named {found.name!r}; `admin tenants rename` renames it")
            raise InputError(f"tenant name {name!r} is taken by tenant {found.tenant_id}")
    raise InputError(f"tenant {tenant_id} could not be added")  # a concurrent delete; run it again


def rename(owner_url: str, reference: str, new_name: str) -> tuple[Tenant, str]:
    """The renamed tenant and its old name."""
    check_name(new_name)
    with psycopg.connect(owner_url) as conn:
        tenant = resolve(conn, reference)
        try:
            row = conn.execute(RENAME, (new_name, tenant.tenant_id)).fetchone()
        except psycopg.errors.UniqueViolation:
            raise InputError(f"tenant name {new_name!r} is taken by another tenant") from None
        assert row is not None  # resolved above, in this transaction
        return _tenant(row), tenant.name


def add_missing(owner_url: str, tenants: Mapping[str, str]) -> None:
    """Each name -> id that is not there yet; existing ids are left as they are."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        for name, tenant_id in tenants.items():
            conn.execute(ADD_MISSING, (tenant_id, check_name(name)))


def list_all(owner_url: str) -> list[Tenant]:
    with psycopg.connect(owner_url) as conn:
        return [_tenant(row) for row in conn.execute(LIST).fetchall()]


def find(owner_url: str, reference: str) -> Tenant:
    with psycopg.connect(owner_url) as conn:
        return resolve(conn, reference)


def set_active(owner_url: str, reference: str, active: bool) -> Tenant:
    """The tenant with this id or name, enabled or disabled; InputError if there is none."""
    with psycopg.connect(owner_url) as conn:
        tenant = resolve(conn, reference)
        row = conn.execute(SET_ACTIVE, (active, tenant.tenant_id)).fetchone()
        assert row is not None
        return _tenant(row)


# -- tenant readers ---------------------------------------------------------------------------------
def _grants(conn: psycopg.Connection[Any], role: str, *, grant: bool, connect: bool = True) -> None:
    """What a reader may use: connect, the tenant_view schema and every view in it (nothing else)."""
    r = sql.Identifier(role)
    db = sql.Identifier(str(conn.info.dbname))
    if grant:
        statements = [
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, r),
            sql.SQL("GRANT USAGE ON SCHEMA tenant_view TO {}").format(r),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA tenant_view TO {}").format(r),
        ]
    else:
        statements = [
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA tenant_view FROM {}").format(r),
            sql.SQL("REVOKE ALL ON SCHEMA tenant_view FROM {}").format(r),
        ]
        if connect:
            statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, r))
    for statement in statements:
        conn.execute(statement)


def _roles_connection(roles_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(roles_url, autocommit=True)


def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _create_role(roles_url: str, role: str, verifier: str) -> None:
    with _roles_connection(roles_url) as conn:
        if _role_exists(conn, role):
            raise InputError(f"role {role!r} exists already; pick another --role")
        try:
            # Nothing but a login: no inherited memberships (a tenant reader is bound by its own name),
            # no attribute that could widen what it sees.
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "PASSWORD {}"
                ).format(sql.Identifier(role), sql.Literal(verifier))
            )
        except psycopg.errors.InsufficientPrivilege:
            raise InputError(
                "creating a login role needs CREATEROLE: set database.roles_url (MDS_SINK_DATABASE__ROLES_URL) "
                "to a role that has it (docs/tenant-security.md)"
            ) from None


def create_reader(owner_url: str, roles_url: str, reference: str, role: str | None = None) -> Credential:
    """A new login role bound to the tenant, with a generated password (returned once)."""
    role = check_role(role or f"{ROLE_PREFIX}{secrets.token_hex(6)}")
    with psycopg.connect(owner_url) as conn:
        tenant = resolve(conn, reference)
        trusted = conn.execute("SELECT purpose FROM tenant_context_roles WHERE role_name = %s", (role,)).fetchone()
        if trusted is not None:
            raise InputError(f"role {role!r} is the {trusted[0]} role, trusted with every tenant; pick another --role")
    password = secrets.token_urlsafe(24)
    _create_role(roles_url, role, scram_verifier(password))
    try:
        with psycopg.connect(owner_url) as conn:
            conn.execute("INSERT INTO tenant_readers (role_name, tenant_id) VALUES (%s, %s)", (role, tenant.tenant_id))
            _grants(conn, role, grant=True)
    except BaseException:
        with _roles_connection(roles_url) as conn:  # no role left behind without its binding
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        raise
    return Credential(role, password, tenant)


def _bound(conn: psycopg.Connection[Any], role: str) -> Reader:
    row = conn.execute(
        "SELECT r.role_name::text, r.tenant_id::text, t.name, r.created_at, r.rotated_at FROM tenant_readers r "
        "JOIN tenants t USING (tenant_id) WHERE r.role_name = %s",
        (role,),
    ).fetchone()
    if row is None:
        raise InputError(f"role {role!r} is not a tenant reader (`admin tenants reader list` lists them)")
    return Reader(*row)


def rotate_reader(owner_url: str, roles_url: str, role: str) -> Credential:
    """A new password for a tenant reader; sessions open with the old one stay open until they end."""
    with psycopg.connect(owner_url) as conn:
        reader = _bound(conn, check_role(role))
        tenant = resolve(conn, reader.tenant_id)
    password = secrets.token_urlsafe(24)
    with _roles_connection(roles_url) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(scram_verifier(password)))
        )
    with psycopg.connect(owner_url) as conn:
        conn.execute("UPDATE tenant_readers SET rotated_at = now() WHERE role_name = %s", (role,))
    return Credential(role, password, tenant)


def reader(owner_url: str, role: str) -> Reader:
    with psycopg.connect(owner_url) as conn:
        return _bound(conn, check_role(role))


def drop_reader(owner_url: str, roles_url: str, role: str) -> Reader:
    """Unbind, revoke and drop the role (its open sessions see nothing from the unbinding on)."""
    with psycopg.connect(owner_url) as conn:
        found = _bound(conn, check_role(role))
        _grants(conn, role, grant=False)
        conn.execute("DELETE FROM tenant_readers WHERE role_name = %s", (role,))
    with _roles_connection(roles_url) as conn:
        try:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        except psycopg.errors.DependentObjectsStillExist as exc:
            raise InputError(
                f"role {role!r} is unbound and has no privilege here, but still holds some in another database "
                f"({str(exc).splitlines()[-1].strip()}); revoke them there and drop it by hand"
            ) from None
    return found


def list_readers(owner_url: str) -> list[Reader]:
    with psycopg.connect(owner_url) as conn:
        return [Reader(*row) for row in conn.execute(READERS).fetchall()]


# -- trusted roles ----------------------------------------------------------------------------------
def list_context_roles(owner_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(owner_url) as conn:
        return [(str(r), str(p)) for r, p in conn.execute(GATEWAYS).fetchall()]


def add_gateway(owner_url: str, role: str) -> None:
    """Trust `role` to choose any tenant with app.tenant_id, and let it read the views and the tenants."""
    role = check_role(role)
    with psycopg.connect(owner_url) as conn:
        if not _role_exists(conn, role):
            raise InputError(f"role {role!r} does not exist")
        if conn.execute("SELECT 1 FROM tenant_readers WHERE role_name = %s", (role,)).fetchone():
            raise InputError(f"role {role!r} is a tenant reader; a gateway must be a role of its own")
        conn.execute(
            "INSERT INTO tenant_context_roles (role_name, purpose) VALUES (%s, 'gateway') ON CONFLICT DO NOTHING",
            (role,),
        )
        _grants(conn, role, grant=True)
        conn.execute(sql.SQL("GRANT SELECT ON tenants TO {}").format(sql.Identifier(role)))


def remove_gateway(owner_url: str, role: str) -> bool:
    """Take the trust back: from now on the role sees no tenant and no tenant id. False if it had none."""
    with psycopg.connect(owner_url) as conn:
        gone = conn.execute(
            "DELETE FROM tenant_context_roles WHERE role_name = %s AND purpose = 'gateway' RETURNING 1", (role,)
        ).fetchone()
        if gone is None:
            return False
        _grants(conn, role, grant=False, connect=False)  # it may still read what is not tenant data
        conn.execute(sql.SQL("REVOKE ALL ON tenants FROM {}").format(sql.Identifier(role)))
        return True
