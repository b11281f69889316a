"""Tenant credentials: readers bound to their tenant by their role; the writer writes through tenant_view.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Until now every reader and the writer chose their tenant with `set_config('app.tenant_id', ..)`, a
setting any session may change: the shared reader credential read every tenant, and the writer could
select every tenant's rows of a guarded table (and of any chunk).

- `tenant_readers` binds a login role to one tenant (`mds-sink admin tenants reader create` makes
  the role and the row). For such a role the views and the policies ignore `app.tenant_id`: it sees its
  tenant, whatever it sets.
- `tenant_context_roles` lists the roles trusted to choose the tenant with `app.tenant_id`: the owner,
  the writer and the gateway reader (the shared reader, kept for existing deployments as an explicit
  trusted gateway; `admin tenants gateway remove` ends that). Any other role sees no tenant.
- `tenant_view.current_tenant()` is that rule; the views and the `tenant_isolation` policies filter on
  it. It runs as the owner (it reads those two tables, which nobody else may), and answers for a role
  only to a session that can act as that role, so nobody learns another role's tenant from it.
- The writer loses its privileges on the tenant tables (and with them on every chunk): the sink
  upserts through the views, whose filter and check option hold it to its context in both modes.
- The gateway reader keeps what it had: SELECT on the plain tables under row security (whose policies
  now filter on the same function) and `tenant_view`; never a hypertable or a guarded table.

The write guard (`tenant_guard` triggers) keeps reading `app.tenant_id`: only the writer and the owner
write, both trusted to set it, and a trigger's WHEN clause cannot hold a subquery (a function call per
row cost ~20% of upsert throughput).
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import text

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# As in 0002 (frozen here: a migration must not change when the code's table list does).
TENANT_TABLES = (
    "bars_minute",
    "bars_hour",
    "bars_day",
    "quotes",
    "fundamentals",
    "news",
    "option_snapshots",
    "jobs",
    "latest_prices",
)
OLD_FILTER = "tenant_id = NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid"
# A scalar subquery: evaluated once per statement (an InitPlan), not once per row.
NEW_FILTER = "tenant_id = (SELECT tenant_view.current_tenant())"

TABLES_SQL = """
CREATE TABLE tenant_context_roles (
    role_name   name PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('owner', 'writer', 'gateway')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenant_context_roles IS
    'Roles trusted to choose their tenant with app.tenant_id (owner, writer, gateway reader); any other sees none.';
CREATE TABLE tenant_readers (
    role_name   name PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);
CREATE INDEX tenant_readers_tenant ON tenant_readers (tenant_id);
COMMENT ON TABLE tenant_readers IS
    'Login roles bound to one tenant: tenant_view shows them that tenant whatever app.tenant_id says.';
"""

# SECURITY DEFINER: they read the two tables above, which only the owner may. The pg_has_role check
# answers for `role` only to a session that can act as it (current_user always is such a role).
FUNCTIONS_SQL = r"""
CREATE FUNCTION tenant_view.bound_tenant(role name) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT r.tenant_id FROM public.tenant_readers r
    WHERE r.role_name = role AND pg_catalog.pg_has_role(session_user, role, 'MEMBER')
$fn$;
CREATE FUNCTION tenant_view.chooses_tenant(role name) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT EXISTS (SELECT 1 FROM public.tenant_context_roles c WHERE c.role_name = role)
        AND pg_catalog.pg_has_role(session_user, role, 'MEMBER')
$fn$;
CREATE FUNCTION tenant_view.current_tenant() RETURNS uuid
LANGUAGE sql STABLE AS $fn$
    SELECT COALESCE(
        tenant_view.bound_tenant(current_user),
        CASE WHEN tenant_view.chooses_tenant(current_user)
             THEN NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid END)
$fn$;
COMMENT ON FUNCTION tenant_view.current_tenant() IS
    'The tenant the current role may see: its own for a tenant reader, app.tenant_id for a trusted role, else NULL.';
"""

VIEW_SQL = """
CREATE OR REPLACE VIEW tenant_view.{name} WITH (security_barrier) AS
    SELECT * FROM public.{name} WHERE {filter}{check}
"""

# Views of other relations (the 5m/1h/1d aggregates `admin policies apply` creates) are redone too.
OTHER_VIEWS_SQL = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'tenant_view'::regnamespace AND c.relkind = 'v' AND c.relname <> 'bars'
  AND c.relname <> ALL(:tables) AND to_regclass('public.' || quote_ident(c.relname)) IS NOT NULL
ORDER BY 1
"""


def _role(name: str) -> str:
    configured = context.config.attributes.get(name)
    return str(configured) if configured else {"writer_role": "mds_writer", "reader_role": "mds_reader"}[name]


def _views(filter_sql: str) -> None:
    for table in TENANT_TABLES:
        op.execute(VIEW_SQL.format(name=table, filter=filter_sql, check="\n    WITH CASCADED CHECK OPTION"))
    others = op.get_bind().execute(text(OTHER_VIEWS_SQL), {"tables": list(TENANT_TABLES)})
    for (name,) in others.fetchall():
        op.execute(VIEW_SQL.format(name=name, filter=filter_sql, check=""))


def _policies(filter_sql: str) -> None:
    for table in TENANT_TABLES:
        op.execute(f"ALTER POLICY tenant_isolation ON {table} USING ({filter_sql}) WITH CHECK ({filter_sql})")


def upgrade() -> None:
    writer, reader = _role("writer_role"), _role("reader_role")
    op.execute(TABLES_SQL)
    op.execute(FUNCTIONS_SQL)
    op.execute(
        "INSERT INTO tenant_context_roles (role_name, purpose) "
        f"VALUES (current_user, 'owner'), ('{writer}', 'writer'), ('{reader}', 'gateway')"
    )
    _views(NEW_FILTER)
    _policies(NEW_FILTER)
    for table in TENANT_TABLES:
        op.execute(f'REVOKE ALL ON {table} FROM "{writer}"')
    op.execute(f'REVOKE ALL ON bars FROM "{writer}"')


def downgrade() -> None:
    writer = _role("writer_role")
    bind = op.get_bind()
    readers = bind.execute(text("SELECT string_agg(role_name, ', ' ORDER BY role_name) FROM tenant_readers")).scalar()
    if readers:
        raise RuntimeError(
            f"tenant reader roles exist ({readers}): below revision 0007 they would read nothing; drop them first "
            "(`mds-sink admin tenants reader drop`)"
        )
    reader = _role("reader_role")
    for relation, grant in (*((t, "SELECT, INSERT, UPDATE") for t in TENANT_TABLES), ("bars", "SELECT")):
        # The reader's grant goes after the writer's again, as 0001 made them (the ACL reads the same).
        reads = bind.execute(text("SELECT has_table_privilege(:r, :t, 'SELECT')"), {"r": reader, "t": relation})
        readable = bool(reads.scalar())
        if readable:
            op.execute(f'REVOKE SELECT ON {relation} FROM "{reader}"')
        op.execute(f'GRANT {grant} ON {relation} TO "{writer}"')
        if readable:
            op.execute(f'GRANT SELECT ON {relation} TO "{reader}"')
    _policies(OLD_FILTER)
    _views(OLD_FILTER)
    op.execute(
        "DROP FUNCTION tenant_view.current_tenant(), tenant_view.chooses_tenant(name), tenant_view.bound_tenant(name)"
    )
    op.execute("DROP TABLE tenant_readers, tenant_context_roles")
