"""The benchmark's data set: deterministic bars and quotes, generated from their index alone.

Pure: record `i` of a shape is always the same record, so a filled topic can be reused across
runs and every measurement of a run sees the same rows. Times are fixed in the past (never "in
the future" for the sink's skew rule), values are plausible OHLCV and L1 quotes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

# Every series ends before this instant (2026-01-01T00:00Z): fixed, so the same index is the same row.
END_US = 1_767_225_600_000_000
_MINUTE_US = 60_000_000
# Share of symbols per timeframe (cumulative), so every bars_* table gets rows; most bars are 1m.
_TIMEFRAMES: tuple[tuple[float, str, int], ...] = (
    (0.70, "1m", _MINUTE_US),
    (0.85, "5m", 5 * _MINUTE_US),
    (0.92, "15m", 15 * _MINUTE_US),
    (0.96, "1h", 60 * _MINUTE_US),
    (0.98, "4h", 240 * _MINUTE_US),
    (1.01, "1d", 1440 * _MINUTE_US),
)
_EXCHANGES = ("XNAS", "XNYS", "ARCX", "BATS", "EDGX")
# One record in this many is a correction (revision 1) of the series' previous bar: exercises dedupe.
CORRECTION_EVERY = 100
_TENANT_NAMESPACE = uuid.UUID("6f1d7a4e-2b1c-4f57-9a55-0d6c3e1b9a10")


@dataclass(frozen=True, slots=True)
class Shape:
    """What a data set looks like; its name is part of the topic names, so a fill is found again."""

    records: int = 1_000_000  # bars
    partitions: int = 12
    tenants: int = 8
    symbols: int = 2_000
    quote_share: float = 0.10  # quotes, as a share of the bars

    def __post_init__(self) -> None:
        if min(self.records, self.partitions, self.tenants, self.symbols) < 1 or not 0 <= self.quote_share <= 10:
            raise ValueError(f"not a usable shape: {self}")
        # Tickers stay unique up to four letters; quote times of a second keep the series apart.
        if self.symbols > 26**4 or self.series >= 1_000_000:
            raise ValueError("at most 456,976 symbols and fewer than 1,000,000 tenant x symbol series")

    @property
    def quotes(self) -> int:
        return round(self.records * self.quote_share)

    @property
    def series(self) -> int:
        return self.tenants * self.symbols

    def topic(self, table: str) -> str:
        """Named by everything its records depend on: a topic of that name holds exactly them."""
        count = self.records if table == "bars" else self.quotes
        return f"bench.{table}.n{count}.p{self.partitions}.t{self.tenants}.s{self.symbols}.v2"

    def tenant_ids(self) -> list[str]:
        return [str(uuid.uuid5(_TENANT_NAMESPACE, f"bench-tenant-{t}")) for t in range(self.tenants)]


def ticker(symbol: int) -> str:
    """A short upper-case ticker per symbol index: AAA, AAB, ... (four letters past 17,576)."""
    letters = ""
    n = symbol
    for _ in range(3 if symbol < 26**3 else 4):
        n, r = divmod(n, 26)
        letters = chr(65 + r) + letters
    return letters


def _timeframe(symbol: int, symbols: int) -> tuple[str, int]:
    share = symbol / symbols
    for limit, name, step_us in _TIMEFRAMES:
        if share < limit:
            return name, step_us
    return _TIMEFRAMES[-1][1], _TIMEFRAMES[-1][2]


def _series(shape: Shape, series: int) -> tuple[int, int]:
    """(tenant index, symbol index): consecutive records rotate through the tenants."""
    return series % shape.tenants, series // shape.tenants


def vendor(tenant: int) -> str:
    return "polygon" if tenant % 2 == 0 else "alpaca"


def key(tenant_id: str, tenant: int, symbol: int) -> bytes:
    """As `mds-sink produce` keys records: tenant/vendor/symbol, so a symbol stays in one partition."""
    return f"{tenant_id}|{vendor(tenant)}|{ticker(symbol)}".encode()


def _is_correction(shape: Shape, i: int) -> bool:
    # Odd steps only: the bar a correction replaces (the step before) is never a correction itself.
    return i % CORRECTION_EVERY == CORRECTION_EVERY - 1 and (i // shape.series) % 2 == 1


def bar(shape: Shape, tenant_ids: list[str], i: int) -> tuple[bytes, dict[str, Any]]:
    """Record `i` of the bars (key, Avro record with raw ts)."""
    series = i % shape.series
    step = i // shape.series
    revision = 0
    if _is_correction(shape, i):
        step -= 1  # the series' previous bar again, with a higher revision and a corrected close
        revision = 1
    tenant, symbol = _series(shape, series)
    timeframe, step_us = _timeframe(symbol, shape.symbols)
    steps = -(-shape.records // shape.series)
    base = 5.0 + (symbol * 7919 % 49_500) / 100
    close = round(base * (1 + 0.001 * ((step * 31 + symbol) % 41 - 20)) * (1.0005 if revision else 1.0), 4)
    open_ = round(base * (1 + 0.001 * ((step * 31 + symbol - 31) % 41 - 20)), 4)
    high = round(max(open_, close) * 1.002, 4)
    low = round(min(open_, close) * 0.998, 4)
    record = {
        "tenant_id": tenant_ids[tenant],
        "vendor": vendor(tenant),
        "symbol": ticker(symbol),
        "timeframe": timeframe,
        "ts": END_US - (steps - step) * step_us,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": float(100 + (i * 13) % 10_000),
        "vwap": round((high + low + close) / 3, 4),
        "trade_count": 1 + i % 500,
        "revision": revision,
    }
    return key(tenant_ids[tenant], tenant, symbol), record


def quote(shape: Shape, tenant_ids: list[str], i: int) -> tuple[bytes, dict[str, Any]]:
    """Record `i` of the quotes: one per series per second, just before END_US."""
    series = i % shape.series
    step = i // shape.series
    tenant, symbol = _series(shape, series)
    steps = -(-shape.quotes // shape.series)
    mid = 5.0 + (symbol * 7919 % 49_500) / 100 * (1 + 0.0001 * ((step * 7 + symbol) % 21 - 10))
    record = {
        "tenant_id": tenant_ids[tenant],
        "vendor": vendor(tenant),
        "symbol": ticker(symbol),
        "ts": END_US - (steps - step) * 1_000_000 - series,
        "bid": round(mid * 0.9995, 4),
        "ask": round(mid * 1.0005, 4),
        "bid_size": float(100 * (1 + i % 9)),
        "ask_size": float(100 * (1 + i % 7)),
        "exchange": _EXCHANGES[i % len(_EXCHANGES)],
        "revision": 0,
    }
    return key(tenant_ids[tenant], tenant, symbol), record


def distinct_bars(shape: Shape) -> int:
    """Rows the bars leave in the database: every record but the corrections (same key again)."""
    corrections = sum(
        1 for i in range(CORRECTION_EVERY - 1, shape.records, CORRECTION_EVERY) if _is_correction(shape, i)
    )
    return shape.records - corrections


def distinct_quotes(shape: Shape) -> int:
    return shape.quotes
