"""`mds-sink query`: read helpers for operators, through `tenant_view`.

The SQL and the tenant context (a tenant reader's own tenant, or the one a gateway reader names) are
db/reads.py's, which the client library's Reader uses too. The command line renders the results
(cli/render.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mds_sink.db import reads
from mds_sink.db.reads import Result
from mds_sink.errors import QueryError

__all__ = ["Result", "bars", "gaps", "latest_prices", "normalise_symbols"]


def normalise_symbols(raw: str) -> list[str]:
    """ "aapl, MSFT" -> ["AAPL", "MSFT"]: the sink stores symbols upper-cased and trimmed."""
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
    if not symbols:
        raise QueryError("no symbols given")
    return symbols


def latest_prices(url: str, tenant: str | None, symbols: Sequence[str], vendor: str | None = None) -> Result:
    conn, tenant_id = reads.connect(url, tenant)
    with conn:
        return reads.latest_prices(conn, tenant_id, symbols, vendor)


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
    conn, tenant_id = reads.connect(url, tenant)
    with conn:
        return reads.bars_window(
            conn, tenant_id, symbol=symbol, timeframe=timeframe, start=start, end=end, vendor=vendor, limit=limit
        )


def gaps(
    url: str,
    tenant: str | None,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    vendor: str | None = None,
    include_closed: bool = False,
    since: datetime | None = None,
    limit: int = 10_000,
) -> Result:
    conn, tenant_id = reads.connect(url, tenant)
    with conn:
        return reads.gaps(
            conn,
            tenant_id,
            symbol=symbol,
            timeframe=timeframe,
            vendor=vendor,
            include_closed=include_closed,
            since=since,
            limit=limit,
        )
