"""Tenant guard: the `tenant_guard` trigger function and the `tenant_view` schema of filtered views.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

A table is isolated by row-level security (`rls`) or, where TimescaleDB refuses row security
(compression, continuous aggregates), by `guard`: the BEFORE INSERT OR UPDATE trigger below plus
security-barrier views filtered by `app.tenant_id`. `mds-sink admin policies apply` moves tables
between the two; this migration provides the pieces, and the views exist in both modes so readers
(and `mds-sink query`) use one path: `tenant_view.<table>`.

On TimescaleDB a hypertable's chunks carry neither its row security nor its policies (upstream
timescale/timescaledb#7830) but do inherit its grants: a role with SELECT or INSERT on the
hypertable can read or write any tenant's rows through `_timescaledb_internal._hyper_*` directly.
So, on hypertables, the triggers are added even in `rls` mode (TimescaleDB clones row triggers onto
every chunk), and the read-only role loses SELECT on them (TimescaleDB propagates the REVOKE to the
chunks); it reads `tenant_view` instead.

The check sits in each trigger's WHEN clause, so the function runs only for a row it refuses (a
function call per row costs about 20% of upsert throughput; the WHEN clause about what row security
costs). A WHEN clause of an INSERT trigger cannot name OLD, hence two triggers: `tenant_guard` (NEW,
INSERT or UPDATE) and `tenant_guard_old` (OLD, UPDATE).
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import text

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# As in 0001 (frozen here: a migration must not change when the code's table list does).
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

CONTEXT = "NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid"
TRIGGERS_SQL = (
    "CREATE TRIGGER tenant_guard BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
    f"WHEN (NEW.tenant_id IS DISTINCT FROM {CONTEXT}) EXECUTE FUNCTION tenant_guard('{{table}}')",
    "CREATE TRIGGER tenant_guard_old BEFORE UPDATE ON {table} FOR EACH ROW "
    f"WHEN (OLD.tenant_id IS DISTINCT FROM {CONTEXT}) EXECUTE FUNCTION tenant_guard('{{table}}')",
)

# 42501 with "row-level security" in the message: the sink's error map classifies it exactly like a
# row-security denial (a poison record, dead-lettered), so both isolation modes fail the same way.
GUARD_FUNCTION_SQL = r"""
CREATE FUNCTION tenant_guard() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    tenant uuid := NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid;
    relation text := COALESCE(TG_ARGV[0], TG_TABLE_NAME);
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format(
            'new row violates row-level security (tenant guard) for table "%s": no tenant context', relation);
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.tenant_id IS DISTINCT FROM tenant THEN
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format(
            'row-level security (tenant guard) for table "%s": the row belongs to another tenant', relation);
    END IF;
    IF NEW.tenant_id IS DISTINCT FROM tenant THEN
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format(
            'new row violates row-level security (tenant guard) for table "%s"', relation);
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION tenant_guard() IS
    'Tenant isolation without row security: NEW and OLD tenant_id must equal app.tenant_id (42501 otherwise).';
REVOKE ALL ON FUNCTION tenant_guard() FROM PUBLIC;
"""

# Owned by the schema owner, so the view reads the table with the owner's rights (the reader needs
# no grant on the table); the filter is the same expression as the RLS policy. CHECK OPTION: a write
# through the view must stay in the caller's tenant.
VIEW_SQL = """
CREATE VIEW tenant_view.{table} WITH (security_barrier) AS
    SELECT * FROM public.{table}
    WHERE tenant_id = NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid
    WITH CASCADED CHECK OPTION
"""

BARS_VIEW_SQL = """
CREATE VIEW tenant_view.bars WITH (security_barrier) AS
    SELECT * FROM tenant_view.bars_minute UNION ALL SELECT * FROM tenant_view.bars_hour
    UNION ALL SELECT * FROM tenant_view.bars_day
"""


def _role(name: str) -> str:
    configured = context.config.attributes.get(name)
    return str(configured) if configured else {"writer_role": "mds_writer", "reader_role": "mds_reader"}[name]


def _hypertables() -> list[str]:
    bind = op.get_bind()
    if not bind.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first():
        return []
    found = bind.execute(
        text(
            "SELECT hypertable_name FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'public' AND hypertable_name = ANY(:t) ORDER BY 1"
        ),
        {"t": list(TENANT_TABLES)},
    )
    return [str(r[0]) for r in found]


def upgrade() -> None:
    writer, reader = _role("writer_role"), _role("reader_role")
    op.execute(GUARD_FUNCTION_SQL)
    op.execute("CREATE SCHEMA tenant_view")
    op.execute(
        "COMMENT ON SCHEMA tenant_view IS 'Each tenant table (and aggregate) filtered by app.tenant_id: "
        "what the read-only role selects'"
    )
    op.execute(f'GRANT USAGE ON SCHEMA tenant_view TO "{writer}", "{reader}"')
    for table in TENANT_TABLES:
        op.execute(VIEW_SQL.format(table=table))
        op.execute(f'GRANT SELECT ON tenant_view.{table} TO "{reader}"')
        # Lets the sink write through the view instead of the table, so it can do without any
        # privilege on the table itself (see docs/timescaledb.md, "The writer's SELECT").
        op.execute(f'GRANT SELECT, INSERT, UPDATE ON tenant_view.{table} TO "{writer}"')
    op.execute(BARS_VIEW_SQL)
    op.execute(f'GRANT SELECT ON tenant_view.bars TO "{writer}", "{reader}"')
    for table in _hypertables():
        for trigger in TRIGGERS_SQL:
            op.execute(trigger.format(table=table))
        op.execute(f'REVOKE SELECT ON {table} FROM "{reader}"')


def downgrade() -> None:
    bind = op.get_bind()
    unprotected = bind.execute(
        text(
            "SELECT string_agg(relname, ', ' ORDER BY relname) FROM pg_class WHERE relname = ANY(:t) "
            "AND relnamespace = 'public'::regnamespace AND NOT (relrowsecurity AND relforcerowsecurity)"
        ),
        {"t": list(TENANT_TABLES)},
    ).scalar()
    if unprotected:
        raise RuntimeError(
            f"{unprotected} in guard isolation (TimescaleDB compression or continuous aggregates): "
            "below revision 0002 they would have no tenant isolation at all; not downgrading"
        )
    reader = _role("reader_role")
    op.execute("DROP SCHEMA tenant_view CASCADE")
    op.execute("DROP FUNCTION tenant_guard() CASCADE")  # and with it every tenant_guard(_old) trigger
    for table in TENANT_TABLES:
        op.execute(f'GRANT SELECT ON {table} TO "{reader}"')
