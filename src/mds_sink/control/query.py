"""`mds-sink query`: read helpers for operators, as the read-only role, through `tenant_view`.

The views are the read path in both isolation modes (under `rls` the table's row security filters
too), so these queries need no knowledge of the mode. The tenant context is transaction-local,
exactly as the sink sets it. The command line renders the results (cli/render.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from mds_sink.db.sql import SET_TENANT
from mds_sink.errors import QueryError

LATEST_PRICES_SQL = (
    "SELECT vendor, symbol, price, bid, ask, ts, source, updated_at FROM tenant_view.latest_prices "
    "WHERE symbol = ANY(%(symbols)s) AND (%(vendor)s::text IS NULL OR vendor = %(vendor)s) "
    "ORDER BY symbol, vendor"
)

BARS_SQL = (
    "SELECT ts, vendor, symbol, timeframe, open, high, low, close, volume, vwap, trade_count, revision "
    "FROM tenant_view.bars WHERE symbol = %(symbol)s AND timeframe = %(timeframe)s "
    "AND ts >= %(start)s AND ts < %(end)s AND (%(vendor)s::text IS NULL OR vendor = %(vendor)s) "
    "ORDER BY ts, vendor LIMIT %(limit)s"
)


@dataclass(frozen=True, slots=True)
class Result:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def normalise_symbols(raw: str) -> list[str]:
    """ "aapl, MSFT" -> ["AAPL", "MSFT"]: the sink stores symbols upper-cased and trimmed."""
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
    if not symbols:
        raise QueryError("no symbols given")
    return symbols


def _tenant_id(conn: psycopg.Connection[Any], tenant: str) -> str:
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        pass
    row = conn.execute("SELECT tenant_id::text FROM tenants WHERE name = %s", (tenant,)).fetchone()
    if row is None:
        raise QueryError(f"no tenant named {tenant!r} (give its name or UUID)")
    return str(row[0])


def _read(url: str, tenant: str, sql: str, params: dict[str, Any]) -> Result:
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # operators compare with vendor feeds, which speak UTC
        tenant_id = _tenant_id(conn, tenant)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(SET_TENANT, (tenant_id,))
            cur.execute(sql, params)
            columns = tuple(d.name for d in cur.description or ())
            return Result(columns, cur.fetchall())


def latest_prices(url: str, tenant: str, symbols: Sequence[str], vendor: str | None = None) -> Result:
    return _read(url, tenant, LATEST_PRICES_SQL, {"symbols": list(symbols), "vendor": vendor})


def bars(
    url: str,
    tenant: str,
    *,
    symbol: str,
    timeframe: str,
    start: datetime,
    end: datetime,
    vendor: str | None = None,
    limit: int = 10_000,
) -> Result:
    if end <= start:
        raise QueryError("--to must be after --from")
    params = {
        "symbol": symbol.strip().upper(),
        "timeframe": timeframe,
        "start": start,
        "end": end,
        "vendor": vendor,
        "limit": limit,
    }
    return _read(url, tenant, BARS_SQL, params)
