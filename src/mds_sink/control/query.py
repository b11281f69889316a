"""`mds-sink query`: read helpers for operators and collectors, through `tenant_view`.

The views are the read path in both isolation modes (under `rls` the table's row security filters
too), so these queries need no knowledge of the mode. Two kinds of credential read them:

- a tenant reader (`admin tenants reader create`): bound to its tenant by the database; `tenant` may
  be omitted, and naming another one is refused here (the views would show its own tenant anyway);
- the gateway reader (the shared `database.reader_url` role, trusted to choose): `tenant` is required
  and set as the transaction-local context, exactly as the sink sets it.

The command line renders the results (cli/render.py).
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


WHO_AM_I = "SELECT current_user, tenant_view.bound_tenant(current_user)::text, tenant_view.chooses_tenant(current_user)"


def _context(conn: psycopg.Connection[Any], tenant: str | None) -> str:
    """The tenant this connection reads: its own for a tenant reader, the one named for a gateway."""
    try:
        row = conn.execute(WHO_AM_I).fetchone()
    except psycopg.errors.InsufficientPrivilege:  # no USAGE on tenant_view: a role trusted with nothing
        conn.rollback()
        row = (conn.info.user, None, False)
    assert row is not None
    role, bound, chooses = row
    if bound is not None:
        if tenant is not None and tenant != bound:
            try:
                same = uuid.UUID(tenant) == uuid.UUID(bound)
            except ValueError:
                same = False
            if not same:
                raise QueryError(
                    f"role {role} reads tenant {bound} only: omit --tenant (or give that id; it cannot look up names)"
                )
        return str(bound)
    if not chooses:
        raise QueryError(
            f"role {role} is neither a tenant reader nor a gateway reader: it sees no tenant "
            "(`mds-sink admin tenants reader create` makes a tenant's credential)"
        )
    if tenant is None:
        raise QueryError(f"role {role} is a gateway reader: --tenant is required")
    return _tenant_id(conn, tenant)


def _read(url: str, tenant: str | None, sql: str, params: dict[str, Any]) -> Result:
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # operators compare with vendor feeds, which speak UTC
        tenant_id = _context(conn, tenant)
        conn.commit()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(SET_TENANT, (tenant_id,))
            cur.execute(sql, params)
            columns = tuple(d.name for d in cur.description or ())
            return Result(columns, cur.fetchall())


def latest_prices(url: str, tenant: str | None, symbols: Sequence[str], vendor: str | None = None) -> Result:
    return _read(url, tenant, LATEST_PRICES_SQL, {"symbols": list(symbols), "vendor": vendor})


def bars(
    url: str,
    tenant: str | None,
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
