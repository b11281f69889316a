"""Start-up checks: refuse to run against a database that would break the guarantees."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from mds_sink.config.settings import Settings
from mds_sink.core.catalog import TENANT_TABLES
from mds_sink.db import migrate
from mds_sink.db.dsn import describe_dsn
from mds_sink.errors import StartupError

ROLE_CHECK = """
SELECT r.rolsuper, r.rolbypassrls,
       (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid AND c.relnamespace = 'public'::regnamespace)
FROM pg_roles r WHERE r.rolname = current_user
"""

RLS_CHECK = """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       -- guard mode: both triggers (new rows, and rows being updated), and enabled
       (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgenabled <> 'D'
         AND t.tgname IN ('tenant_guard', 'tenant_guard_old')) = 2
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)
"""


def check_database(settings: Settings, pool: ConnectionPool) -> str:
    """Reachable, at the code's head revision, a writer role that cannot bypass tenant isolation."""
    where = describe_dsn(settings.database.url.get_secret_value())
    try:
        pool.open(wait=True, timeout=settings.database.connect_timeout_s + 1)
    except Exception as exc:  # the pool's timeout hides the cause: name the address and the first line
        raise StartupError(f"cannot reach the database at {where}: {str(exc).splitlines()[0]}") from None
    head = migrate.head_revision(settings)
    with pool.connection() as conn:
        try:
            current = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            current = None
        if current is None or current[0] != head:
            at = "an empty schema" if current is None else f"revision {current[0]}"
            raise StartupError(
                f"the database at {where} is at {at}; this mds-sink needs revision {head}: run `mds-sink admin migrate`"
            )
        superuser, bypass, owned = conn.execute(ROLE_CHECK).fetchone() or (False, False, 0)
        if superuser or bypass or owned:
            what = "is a superuser" if superuser else "has BYPASSRLS" if bypass else f"owns {owned} relations"
            raise StartupError(
                f"the writer role at {where} {what}: tenant isolation would not hold; "
                "use a role without it (see deploy/local/stack.sh)"
            )
        for name, rls, forced, guarded in conn.execute(RLS_CHECK, (list(TENANT_TABLES),)).fetchall():
            if not guarded and not (rls and forced):
                raise StartupError(f"table {name} has neither forced row-level security nor the tenant guard")
    return str(head)
