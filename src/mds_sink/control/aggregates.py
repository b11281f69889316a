"""Bars aggregated from 1m bars: 5m, 1h and 1d, as SQL (pure).

With TimescaleDB they are continuous aggregates over bars_minute (real-time: rows not materialized
yet are computed from the raw bars). Without it they are plain views computed when read: a
materialized view would be refreshed by its owner, and forced row security shows the owner no rows.
Either way readers select `tenant_view.bars_5m` etc., filtered by `app.tenant_id`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mds_sink.control.isolation import tenant_view
from mds_sink.core.intervals import Interval

SOURCE_TABLE = "bars_minute"
SOURCE_TIMEFRAME = "1m"
# time_bucket's default origin for timestamptz; plain views use it too, so buckets match exactly.
ORIGIN = "2000-01-03 00:00:00+00"


@dataclass(frozen=True, slots=True)
class Aggregate:
    name: str
    bucket: str  # an interval literal


AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("bars_5m", "5 minutes"),
    Aggregate("bars_1h", "1 hour"),
    Aggregate("bars_1d", "1 day"),
)


def select_sql(agg: Aggregate, *, timescaledb: bool) -> str:
    if timescaledb:
        bucket = f"time_bucket(interval '{agg.bucket}', ts)"
        first_open, last_close = "first(open, ts)", "last(close, ts)"
    else:
        bucket = f"date_bin(interval '{agg.bucket}', ts, timestamptz '{ORIGIN}')"
        first_open, last_close = "(array_agg(open ORDER BY ts))[1]", "(array_agg(close ORDER BY ts DESC))[1]"
    weighted = "FILTER (WHERE vwap IS NOT NULL)"
    return (
        f"SELECT {bucket} AS ts, tenant_id, vendor, symbol, {first_open} AS open, max(high) AS high, "
        f"min(low) AS low, {last_close} AS close, sum(volume) AS volume, "
        f"sum(vwap * volume) {weighted} / NULLIF(sum(volume) {weighted}, 0) AS vwap, "
        "sum(trade_count)::bigint AS trade_count, count(*) AS bar_count "
        f"FROM public.{SOURCE_TABLE} WHERE timeframe = '{SOURCE_TIMEFRAME}' "
        f"GROUP BY {bucket}, tenant_id, vendor, symbol"
    )


def create_continuous(agg: Aggregate, reader: str) -> list[str]:
    """Created empty (allowed inside a transaction); the refresh policy or `aggregates refresh` fills it."""
    return [
        f"CREATE MATERIALIZED VIEW public.{agg.name} "
        "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
        f"{select_sql(agg, timescaledb=True)} WITH NO DATA",
        f"COMMENT ON VIEW public.{agg.name} IS "  # a continuous aggregate is a view
        f"'{agg.bucket} bars from the {SOURCE_TIMEFRAME} bars of {SOURCE_TABLE}; read tenant_view.{agg.name}'",
        # Row security cannot filter an aggregate: the reader gets the filtered view only.
        f'REVOKE ALL ON public.{agg.name} FROM "{reader}"',
        *tenant_view(agg.name, reader),
    ]


def create_plain(agg: Aggregate, reader: str) -> list[str]:
    # security_invoker: whoever reads it reads bars_minute with their own rights and row security.
    return [
        f"CREATE VIEW public.{agg.name} WITH (security_invoker = true) AS {select_sql(agg, timescaledb=False)}",
        f"COMMENT ON VIEW public.{agg.name} IS "
        f"'{agg.bucket} bars from the {SOURCE_TIMEFRAME} bars of {SOURCE_TABLE}, computed when read'",
        *tenant_view(agg.name, reader),
    ]


def refresh_policy(agg: Aggregate, start: Interval, end: Interval, every: Interval) -> list[str]:
    return [
        f"SELECT remove_continuous_aggregate_policy('public.{agg.name}', if_exists => true)",
        f"SELECT add_continuous_aggregate_policy('public.{agg.name}', start_offset => interval '{start.sql}', "
        f"end_offset => interval '{end.sql}', schedule_interval => interval '{every.sql}')",
    ]
