"""Reading what the sink wrote, on a tenant's credential: latest prices and a window of bars.

The SQL and the tenant context are db/reads.py's (`mds-sink query` runs the same). A tenant reader's
URL (`admin tenants reader create`) reads its own tenant; a gateway reader's (`database.reader_url`)
must name one with `tenant=`.

    with Reader(url) as reader:
        prices = reader.latest_prices(["AAPL", "MSFT"])
        frame = as_dataframe(reader.bars_window("AAPL", "1m", start, end))   # needs pandas

`AsyncReader` runs the same reads in a worker thread, one at a time per reader.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import threading
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from mds_sink.db import reads


@dataclasses.dataclass(frozen=True, slots=True)
class LatestPrice:
    vendor: str
    symbol: str
    price: float
    bid: float | None
    ask: float | None
    ts: datetime
    source: str
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class BarRow:
    ts: datetime
    vendor: str
    symbol: str
    timeframe: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trade_count: int | None
    revision: int


def as_dicts(rows: Sequence[LatestPrice | BarRow]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in rows]


def as_dataframe(rows: Sequence[LatestPrice | BarRow]) -> Any:
    """A pandas DataFrame of the rows, one column per field; pandas is imported here, and only here: the
    library does not depend on it (ImportError saying so when it is not installed)."""
    try:
        pandas: Any = importlib.import_module("pandas")  # optional, and untyped: only for callers who ask
    except ImportError:
        raise ImportError(
            "as_dataframe needs pandas, which mds-sink does not install: install pandas beside it, "
            "or use as_dicts(rows)"
        ) from None
    columns = [f.name for f in dataclasses.fields(rows[0])] if rows else None
    return pandas.DataFrame(as_dicts(rows), columns=columns)


def _normalised(symbols: Sequence[str]) -> list[str]:
    # The sink stores symbols trimmed and upper-cased: ask for them the same way.
    return [s.strip().upper() for s in symbols if s.strip()]


class Reader:
    """One connection, resolved to its tenant once; not for concurrent use from several threads."""

    def __init__(self, url: str, *, tenant: str | None = None) -> None:
        self._conn, self.tenant_id = reads.connect(url, tenant)
        self.role: str = self._conn.info.user
        self._lock = threading.Lock()

    def latest_prices(self, symbols: Sequence[str], vendor: str | None = None) -> list[LatestPrice]:
        with self._lock:
            result = reads.latest_prices(self._conn, self.tenant_id, _normalised(symbols), vendor)
        return [LatestPrice(*row) for row in result.rows]

    def bars_window(
        self,
        symbol: str,
        timeframe: str,
        start: datetime,
        end: datetime,
        vendor: str | None = None,
        *,
        limit: int = 10_000,
    ) -> list[BarRow]:
        """Bars in [start, end): stored ones of `timeframe`, or its aggregate (5m, 1h, 1d) where none are."""
        with self._lock:
            result = reads.bars_window(
                self._conn,
                self.tenant_id,
                symbol=symbol,
                timeframe=timeframe,
                start=start,
                end=end,
                vendor=vendor,
                limit=limit,
            )
        return [BarRow(*row) for row in result.rows]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncReader:
    """The Reader's reads awaited: each runs in a worker thread, so the event loop never blocks on them."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    @classmethod
    async def connect(cls, url: str, *, tenant: str | None = None) -> AsyncReader:
        return cls(await asyncio.to_thread(Reader, url, tenant=tenant))

    @property
    def tenant_id(self) -> str:
        return self._reader.tenant_id

    async def latest_prices(self, symbols: Sequence[str], vendor: str | None = None) -> list[LatestPrice]:
        return await asyncio.to_thread(self._reader.latest_prices, symbols, vendor)

    async def bars_window(
        self,
        symbol: str,
        timeframe: str,
        start: datetime,
        end: datetime,
        vendor: str | None = None,
        *,
        limit: int = 10_000,
    ) -> list[BarRow]:
        return await asyncio.to_thread(self._reader.bars_window, symbol, timeframe, start, end, vendor, limit=limit)

    async def close(self) -> None:
        await asyncio.to_thread(self._reader.close)

    async def __aenter__(self) -> AsyncReader:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
