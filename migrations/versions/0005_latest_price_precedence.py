"""latest_prices.precedence: which price wins at an equal ts, whatever order the prices arrive in.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Bars of every timeframe and quotes feed one latest price per tenant, vendor and symbol. At an equal
ts the one kept used to be whichever was written last. Now the price taken nearest to ts wins: a
quote (a price at ts itself), then bars from the shortest timeframe to the longest (a bar's ts is
its start, its close the price at its end). The flush compares the rank of what it writes with the
rank stored here, so a coarser bar arriving after a finer one of the same ts changes nothing.

Rows stored before this revision are ranked from what they came from: quotes from their source; a
bar from the bar at that ts whose close is the stored price (the finest, if several are); a bar no
longer stored (retention) gets the lowest rank, so any bar of its ts may replace it, as before. Rows
are ranked tenant by tenant (of the tenants table): both tables are under row security, which binds
their owner too. The column's default is that lowest rank: a price written without one yields.
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import text

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# As in src/mds_sink/tables.py (frozen here: a migration must not change when the code does); higher wins.
BAR_PRECEDENCE = {"1m": 8, "5m": 7, "15m": 6, "30m": 5, "1h": 4, "4h": 3, "1d": 2, "1w": 1}
QUOTE_PRECEDENCE = 9
LOWEST = min(BAR_PRECEDENCE.values())

RANK = "CASE b.timeframe " + " ".join(f"WHEN '{tf}' THEN {rank}" for tf, rank in BAR_PRECEDENCE.items()) + " END"
BACKFILL_SQL = f"""
UPDATE latest_prices lp SET precedence = coalesce((
    SELECT max({RANK}) FROM bars b
    WHERE b.ts = lp.ts AND b.tenant_id = lp.tenant_id AND b.vendor = lp.vendor AND b.symbol = lp.symbol
      AND b.close = lp.price
), {LOWEST})
WHERE lp.source = 'bar'
"""

CONTEXT = "NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid"
# As 0002 creates it; `SELECT *` is expanded when a view is created, so the view is created again to
# show (and let the sink write through it) the new column.
VIEW_SQL = f"""
CREATE OR REPLACE VIEW tenant_view.latest_prices WITH (security_barrier) AS
    SELECT * FROM public.latest_prices
    WHERE tenant_id = {CONTEXT}
    WITH CASCADED CHECK OPTION
"""


def _role(name: str) -> str:
    configured = context.config.attributes.get(name)
    return str(configured) if configured else {"writer_role": "mds_writer", "reader_role": "mds_reader"}[name]


def upgrade() -> None:
    op.execute(f"ALTER TABLE latest_prices ADD COLUMN precedence smallint NOT NULL DEFAULT {LOWEST}")
    op.execute(
        "COMMENT ON COLUMN latest_prices.precedence IS "
        "'Rank of the stored price among prices of its ts, higher wins: quote 9, then bars 1m 8 down to 1w 1.'"
    )
    bind = op.get_bind()
    for (tenant,) in bind.execute(text("SELECT tenant_id::text FROM tenants ORDER BY tenant_id")).fetchall():
        bind.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
        bind.execute(text(f"UPDATE latest_prices SET precedence = {QUOTE_PRECEDENCE} WHERE source = 'quote'"))
        bind.execute(text(BACKFILL_SQL))
    bind.execute(text("SELECT set_config('app.tenant_id', '', true)"))  # the later revisions run without one
    op.execute(VIEW_SQL)


def downgrade() -> None:
    writer, reader = _role("writer_role"), _role("reader_role")
    # A view cannot lose a column: dropped and created again as 0002 left it, with its grants.
    op.execute("DROP VIEW tenant_view.latest_prices")
    op.execute("ALTER TABLE latest_prices DROP COLUMN precedence")
    op.execute(VIEW_SQL.replace("CREATE OR REPLACE VIEW", "CREATE VIEW"))
    op.execute(f'GRANT SELECT ON tenant_view.latest_prices TO "{reader}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON tenant_view.latest_prices TO "{writer}"')
