"""Initial schema: tenants, market-data tables under RLS, latest prices, jobs outbox, offsets ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import logging

from alembic import context, op
from sqlalchemy import text

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

log = logging.getLogger("mds_sink.db.migrate")

# Bars are stored by timeframe class, so each class gets its own chunk interval, compression and
# retention (minute bars are many and short-lived, day bars few and kept for years). `bars` is a view.
BAR_TABLES = {
    "bars_minute": ("1m", "5m", "15m", "30m"),
    "bars_hour": ("1h", "4h"),
    "bars_day": ("1d", "1w"),
}
TENANT_TABLES = (*BAR_TABLES, "quotes", "fundamentals", "news", "option_snapshots", "jobs", "latest_prices")

# Time-series tables and the chunk interval they start with (policies come from `admin policies`).
HYPERTABLES = {
    "bars_minute": ("ts", "1 day"),
    "bars_hour": ("ts", "7 days"),
    "bars_day": ("ts", "30 days"),
    "quotes": ("ts", "1 day"),
    "fundamentals": ("as_of", "365 days"),
    "news": ("published_at", "30 days"),
    "option_snapshots": ("ts", "1 day"),
}

BAR_SQL = """
CREATE TABLE {table} (
    ts           timestamptz NOT NULL,
    tenant_id    uuid NOT NULL,
    vendor       text NOT NULL,
    symbol       text NOT NULL,
    timeframe    text NOT NULL CHECK (timeframe IN ({timeframes})),
    open         double precision NOT NULL CHECK (open >= 0),
    high         double precision NOT NULL CHECK (high >= 0),
    low          double precision NOT NULL CHECK (low >= 0),
    close        double precision NOT NULL CHECK (close >= 0),
    volume       double precision NOT NULL CHECK (volume >= 0),
    vwap         double precision CHECK (vwap >= 0),
    trade_count  bigint CHECK (trade_count >= 0),
    revision     integer NOT NULL DEFAULT 0,
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, tenant_id, vendor, symbol, timeframe),
    CHECK (high >= low)
);
CREATE INDEX {table}_symbol_ts ON {table} (tenant_id, symbol, timeframe, ts DESC);
"""

# Readers query one relation; security_invoker makes the tables' row security apply to the caller.
BARS_VIEW_SQL = """
CREATE VIEW bars WITH (security_invoker = true) AS
    SELECT * FROM bars_minute UNION ALL SELECT * FROM bars_hour UNION ALL SELECT * FROM bars_day;
COMMENT ON VIEW bars IS 'All bars; stored in bars_minute, bars_hour and bars_day by timeframe.';
"""

TABLES_SQL = """
CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenants IS 'Tenants whose data the sink accepts; disabled tenants are rejected.';

CREATE TABLE quotes (
    ts           timestamptz NOT NULL,
    tenant_id    uuid NOT NULL,
    vendor       text NOT NULL,
    symbol       text NOT NULL,
    bid          double precision NOT NULL CHECK (bid >= 0),
    ask          double precision NOT NULL CHECK (ask >= 0),
    bid_size     double precision NOT NULL CHECK (bid_size >= 0),
    ask_size     double precision NOT NULL CHECK (ask_size >= 0),
    exchange     text,
    revision     integer NOT NULL DEFAULT 0,
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, tenant_id, vendor, symbol)
);
CREATE INDEX quotes_symbol_ts ON quotes (tenant_id, symbol, ts DESC);

CREATE TABLE fundamentals (
    as_of              date NOT NULL,
    tenant_id          uuid NOT NULL,
    vendor             text NOT NULL,
    symbol             text NOT NULL,
    period             text NOT NULL CHECK (period IN ('FY', 'Q1', 'Q2', 'Q3', 'Q4', 'TTM')),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_assets       double precision,
    total_liabilities  double precision,
    revenue            double precision,
    net_income         double precision,
    eps                double precision,
    shares_outstanding double precision CHECK (shares_outstanding >= 0),
    revision           integer NOT NULL DEFAULT 0,
    ingested_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (as_of, tenant_id, vendor, symbol, period)
);

CREATE TABLE news (
    published_at     timestamptz NOT NULL,
    tenant_id        uuid NOT NULL,
    news_id          text NOT NULL,
    vendor           text NOT NULL,
    title            text NOT NULL CHECK (title <> ''),
    symbol           text,
    url              text,
    summary          text,
    sentiment_score  double precision CHECK (sentiment_score BETWEEN -1 AND 1),
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (published_at, tenant_id, news_id)
);
CREATE INDEX news_symbol_published ON news (tenant_id, symbol, published_at DESC);

CREATE TABLE option_snapshots (
    ts             timestamptz NOT NULL,
    tenant_id      uuid NOT NULL,
    vendor         text NOT NULL,
    underlying     text NOT NULL,
    expiry         date NOT NULL,
    option_type    char(1) NOT NULL CHECK (option_type IN ('C', 'P')),
    strike         double precision NOT NULL CHECK (strike > 0),
    iv             double precision CHECK (iv >= 0),
    delta          double precision CHECK (delta BETWEEN -1 AND 1),
    gamma          double precision,
    theta          double precision,
    vega           double precision,
    open_interest  bigint CHECK (open_interest >= 0),
    volume         bigint CHECK (volume >= 0),
    spot           double precision CHECK (spot >= 0),
    bid            double precision CHECK (bid >= 0),
    ask            double precision CHECK (ask >= 0),
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, tenant_id, vendor, underlying, expiry, option_type, strike)
);

CREATE TABLE jobs (
    tenant_id        uuid NOT NULL,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    job_type         text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    priority         integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    requested_at     timestamptz NOT NULL,
    requested_by     text,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX jobs_pending ON jobs (priority DESC, created_at) WHERE status = 'pending';
COMMENT ON TABLE jobs IS 'Outbox of job requests: one row per (tenant, idempotency key).';

CREATE TABLE latest_prices (
    tenant_id   uuid NOT NULL,
    vendor      text NOT NULL,
    symbol      text NOT NULL,
    price       double precision NOT NULL,
    bid         double precision,
    ask         double precision,
    ts          timestamptz NOT NULL,
    source      text NOT NULL CHECK (source IN ('bar', 'quote')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, vendor, symbol)
);
COMMENT ON TABLE latest_prices IS
    'Newest price per tenant/vendor/symbol from bars and quotes; only moves forward in time.';

CREATE TABLE sink_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL CHECK (partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
COMMENT ON TABLE sink_offsets IS
    'Next offset to consume per group/topic/partition, written in the same transaction as the rows.';
"""


def _role(name: str) -> str:
    configured = context.config.attributes.get(name)
    return str(configured) if configured else {"writer_role": "mds_writer", "reader_role": "mds_reader"}[name]


def _require_role(role: str, what: str) -> None:
    found = op.get_bind().execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if found is None:
        raise RuntimeError(
            f"role {role!r} ({what}) does not exist: create it (LOGIN NOSUPERUSER NOBYPASSRLS) before migrating"
        )


def _timescaledb() -> bool:
    """Is the extension created in this database? Creating it needs a superuser, so it is not tried here."""
    bind = op.get_bind()
    if bind.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first():
        return True
    if bind.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")).first():
        log.warning(
            "timescaledb is installed on the server but not created in this database: a superuser can run "
            "CREATE EXTENSION timescaledb (preloaded via shared_preload_libraries) before migrating"
        )
    return False


def upgrade() -> None:
    writer, reader = _role("writer_role"), _role("reader_role")
    _require_role(writer, "the sink's writer")
    _require_role(reader, "the read-only role")
    op.execute(TABLES_SQL)
    for table, timeframes in BAR_TABLES.items():
        op.execute(BAR_SQL.format(table=table, timeframes=", ".join(f"'{t}'" for t in timeframes)))
    op.execute(BARS_VIEW_SQL)

    if _timescaledb():
        for table, (column, interval) in HYPERTABLES.items():
            op.execute(f"SELECT create_hypertable('{table}', '{column}', chunk_time_interval => interval '{interval}')")
        log.info("timescaledb found: %s are hypertables", ", ".join(HYPERTABLES))
    else:
        log.warning(
            "timescaledb extension is not available in this database: creating plain PostgreSQL tables "
            "(hypertables, compression and retention policies need it)"
        )

    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            "USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid) "
            "WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
        )
        op.execute(f'GRANT SELECT, INSERT, UPDATE ON {table} TO "{writer}"')
        op.execute(f'GRANT SELECT ON {table} TO "{reader}"')

    op.execute(f'GRANT USAGE ON SCHEMA public TO "{writer}", "{reader}"')
    op.execute(f'GRANT SELECT ON bars TO "{writer}", "{reader}"')
    op.execute(f'GRANT SELECT ON tenants TO "{writer}", "{reader}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON sink_offsets TO "{writer}"')
    op.execute(f'GRANT SELECT ON sink_offsets TO "{reader}"')
    # The sink refuses to start on a database behind its code; it reads the revision as the writer.
    op.execute(f'GRANT SELECT ON alembic_version TO "{writer}", "{reader}"')
    # The sink stages each flush in a temporary table: COPY cannot target a table under RLS.
    op.execute(
        "DO $$ BEGIN EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I, %I', "
        f"current_database(), '{writer}', '{reader}'); END $$"
    )


def downgrade() -> None:
    writer, reader = _role("writer_role"), _role("reader_role")
    op.execute(
        "DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM %I, %I', "
        f"current_database(), '{writer}', '{reader}'); END $$"
    )
    op.execute("DROP VIEW IF EXISTS bars")
    for table in ("sink_offsets", *reversed(TENANT_TABLES), "tenants"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
