"""bar_gaps: the holes in bar series during trading sessions, opened and closed as bars land.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

A gap is the bars of a series (tenant, vendor, symbol, timeframe) missing between two bars that
landed, counted on the series' exchange calendar: [gap_from, gap_to) lacked `missing_bars` bars when it
was found. It stays open (closed_at NULL) until they arrive, late, from a backfill or from a replay;
`remaining_bars` is the last count. One backfill job is requested per gap, under `backfill_key`.

A tenant table like the others: row security (policy on tenant_view.current_tenant(), as 0007 left
them), the sink writes through tenant_view.bar_gaps, readers read it there.
"""

from __future__ import annotations

from alembic import context, op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

FILTER = "tenant_id = (SELECT tenant_view.current_tenant())"

TABLE_SQL = f"""
CREATE TABLE bar_gaps (
    tenant_id              uuid NOT NULL,
    vendor                 text NOT NULL,
    symbol                 text NOT NULL,
    timeframe              text NOT NULL,
    gap_from               timestamptz NOT NULL,
    gap_to                 timestamptz NOT NULL,
    missing_bars           integer NOT NULL CHECK (missing_bars > 0),
    remaining_bars         integer NOT NULL CHECK (remaining_bars >= 0),
    calendar               text NOT NULL,
    opened_at              timestamptz NOT NULL DEFAULT now(),
    closed_at              timestamptz,
    backfill_key           text,
    backfill_requested_at  timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, vendor, symbol, timeframe, gap_from),
    CHECK (gap_to > gap_from)
);
CREATE INDEX bar_gaps_open ON bar_gaps (tenant_id, timeframe, gap_from) WHERE closed_at IS NULL;
COMMENT ON TABLE bar_gaps IS
    'Bars missing in trading sessions between two bars that landed; open until they arrive.';
ALTER TABLE bar_gaps ENABLE ROW LEVEL SECURITY;
ALTER TABLE bar_gaps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bar_gaps USING ({FILTER}) WITH CHECK ({FILTER});
CREATE VIEW tenant_view.bar_gaps WITH (security_barrier) AS
    SELECT * FROM public.bar_gaps WHERE {FILTER}
    WITH CASCADED CHECK OPTION;
"""

# As isolation.GRANT_TO_TENANT_READERS: readers bound to a tenant before this revision see it too.
GRANT_TO_TENANT_READERS = """DO $grant$ DECLARE r name; BEGIN
    FOR r IN SELECT role_name FROM public.tenant_readers ORDER BY 1 LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON tenant_view.bar_gaps TO %I', r);
    END LOOP;
END $grant$"""


def _role(name: str) -> str:
    configured = context.config.attributes.get(name)
    return str(configured) if configured else {"writer_role": "mds_writer", "reader_role": "mds_reader"}[name]


def upgrade() -> None:
    writer, reader = _role("writer_role"), _role("reader_role")
    op.execute(TABLE_SQL)
    # The gateway reader reads the plain tables under row security, as it does every tenant table.
    op.execute(f'GRANT SELECT ON bar_gaps TO "{reader}"')
    op.execute(f'GRANT SELECT ON tenant_view.bar_gaps TO "{reader}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON tenant_view.bar_gaps TO "{writer}"')
    op.execute(GRANT_TO_TENANT_READERS)


def downgrade() -> None:
    op.execute("DROP VIEW tenant_view.bar_gaps")
    op.execute("DROP TABLE bar_gaps")
