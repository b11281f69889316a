"""The read helpers' SQL and their tenant context, shared by `mds-sink query` (control/query.py) and the
client library's Reader (client/reader.py).

Reads go through `tenant_view`: the read path in both isolation modes (under `rls` the table's row
security filters too), so these queries need no knowledge of the mode. Two kinds of credential read:

- a tenant reader (`admin tenants reader create`): bound to its tenant by the database; `tenant` may
  be omitted, and naming another one is refused here (the views would show its own tenant anyway);
- the gateway reader (the shared `database.reader_url` role, trusted to choose): `tenant` is required
  and set as the transaction-local context, exactly as the sink sets it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

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

# The aggregates built from 1m bars (control/aggregates.py); read where no bars of their timeframe
# were stored. They carry no revision of their own: 0, as a bar that was never corrected.
AGGREGATE_VIEWS = {"5m": "bars_5m", "1h": "bars_1h", "1d": "bars_1d"}
_AGGREGATE_SQL = (
    "SELECT ts, vendor, symbol, %(timeframe)s::text AS timeframe, open, high, low, close, volume, vwap, "
    "trade_count, 0 AS revision FROM tenant_view.{view} WHERE symbol = %(symbol)s "
    "AND ts >= %(start)s AND ts < %(end)s AND (%(vendor)s::text IS NULL OR vendor = %(vendor)s) "
    "ORDER BY ts, vendor LIMIT %(limit)s"
)

GAPS_SQL = (
    "SELECT vendor, symbol, timeframe, gap_from, gap_to, missing_bars, remaining_bars, calendar, opened_at, "
    "closed_at, backfill_requested_at, backfill_key FROM tenant_view.bar_gaps "
    "WHERE (%(symbol)s::text IS NULL OR symbol = %(symbol)s) "
    "AND (%(timeframe)s::text IS NULL OR timeframe = %(timeframe)s) "
    "AND (%(vendor)s::text IS NULL OR vendor = %(vendor)s) AND (%(all)s OR closed_at IS NULL) "
    "AND (%(since)s::timestamptz IS NULL OR gap_to > %(since)s) "
    "ORDER BY symbol, timeframe, vendor, gap_from LIMIT %(limit)s"
)

WHO_AM_I = "SELECT current_user, tenant_view.bound_tenant(current_user)::text, tenant_view.chooses_tenant(current_user)"


@dataclass(frozen=True, slots=True)
class Result:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _tenant_id(conn: psycopg.Connection[Any], tenant: str) -> str:
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        pass
    row = conn.execute("SELECT tenant_id::text FROM tenants WHERE name = %s", (tenant,)).fetchone()
    if row is None:
        raise QueryError(f"no tenant named {tenant!r} (give its name or UUID)")
    return str(row[0])


def reading_tenant(conn: psycopg.Connection[Any], tenant: str | None) -> str:
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


def connect(url: str, tenant: str | None) -> tuple[psycopg.Connection[Any], str]:
    """A connection in UTC and the tenant it reads (QueryError, connection closed, if it reads none)."""
    conn = psycopg.connect(url)
    try:
        conn.execute("SET TIME ZONE 'UTC'")  # operators compare with vendor feeds, which speak UTC
        tenant_id = reading_tenant(conn, tenant)
        conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn, tenant_id


def read(conn: psycopg.Connection[Any], tenant_id: str, query: str | sql.Composed, params: dict[str, Any]) -> Result:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(SET_TENANT, (tenant_id,))
        cur.execute(query, params)
        columns = tuple(d.name for d in cur.description or ())
        return Result(columns, cur.fetchall())


def latest_prices(conn: psycopg.Connection[Any], tenant_id: str, symbols: Sequence[str], vendor: str | None) -> Result:
    return read(conn, tenant_id, LATEST_PRICES_SQL, {"symbols": list(symbols), "vendor": vendor})


def bars_window(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    *,
    symbol: str,
    timeframe: str,
    start: datetime,
    end: datetime,
    vendor: str | None = None,
    limit: int = 10_000,
) -> Result:
    """Bars of `timeframe` in [start, end): the stored ones, or, when none of that timeframe are stored in
    the range and an aggregate of it exists (5m, 1h, 1d), the aggregate's."""
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
    stored = read(conn, tenant_id, BARS_SQL, params)
    view = AGGREGATE_VIEWS.get(timeframe)
    if stored.rows or view is None:
        return stored
    aggregate = sql.SQL(_AGGREGATE_SQL).format(view=sql.Identifier(view))
    try:
        return read(conn, tenant_id, aggregate, params)
    except psycopg.errors.InsufficientPrivilege as exc:
        # Without TimescaleDB the aggregate is a security-invoker view over bars_minute, which a tenant
        # reader may not select: say so in one line rather than answer "no bars".
        raise QueryError(
            f"no {timeframe} bars stored in the range, and role {conn.info.user} may not read the aggregate "
            f"tenant_view.{view} ({str(exc).splitlines()[0]})"
        ) from None


def gaps(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    vendor: str | None = None,
    include_closed: bool = False,
    since: datetime | None = None,
    limit: int = 10_000,
) -> Result:
    """Gaps of the tenant's bar series (bar_gaps): the open ones, or with `include_closed` their history."""
    params = {
        "symbol": symbol.strip().upper() if symbol else None,
        "timeframe": timeframe,
        "vendor": vendor,
        "all": include_closed,
        "since": since,
        "limit": limit,
    }
    return read(conn, tenant_id, GAPS_SQL, params)
