"""Shared by the control-plane tests on plain PostgreSQL and on TimescaleDB: bars, expected aggregates, the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool
from typer.testing import CliRunner, Result

from mds_sink.cli.app import app
from mds_sink.config.settings import Settings
from mds_sink.core.tables import BARS
from mds_sink.db.writer import Writer, open_pool
from tests.throwaway import owner_url, reader_url

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def micros(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def bar_row(
    tenant: str, symbol: str, ts: datetime, close: float, *, revision: int = 0, timeframe: str = "1m"
) -> tuple[Any, ...]:
    """A staged bar as the sink stages it (tables.BARS column order, raw values): open = vwap = close."""
    return (
        micros(ts),
        tenant,
        "polygon",
        symbol,
        timeframe,
        close,
        close + 1,
        close - 1,
        close,
        100.0,
        close,
        5,
        revision,
    )


def writer_pool(s: Settings) -> ConnectionPool:
    pool = open_pool(
        s.database.url.get_secret_value(), min_size=1, max_size=2, connect_timeout_s=5, statement_timeout_ms=60_000
    )
    pool.open(wait=True, timeout=10)
    return pool


def write_bars(s: Settings, rows: Sequence[tuple[Any, ...]]) -> None:
    """Through the sink's own writer: its sessions, its SQL, its tenant contexts."""
    pool = writer_pool(s)
    try:
        Writer(pool, "control-plane-test").write(BARS, rows, {})
    finally:
        pool.close()


def minute_bars(tenant: str, symbol: str, start: datetime, count: int, first_close: float) -> list[tuple[Any, ...]]:
    return [bar_row(tenant, symbol, start + i * MINUTE, first_close + i) for i in range(count)]


# Ten 1m bars from T0 with closes 100..109 (see minute_bars): what each aggregate must hold.
# (ts, open, high, low, close, volume, vwap, trade_count, bar_count)
EXPECTED_AGGREGATES: dict[str, list[tuple[Any, ...]]] = {
    "bars_5m": [
        (T0, 100.0, 105.0, 99.0, 104.0, 500.0, 102.0, 25, 5),
        (T0 + 5 * MINUTE, 105.0, 110.0, 104.0, 109.0, 500.0, 107.0, 25, 5),
    ],
    "bars_1h": [(T0, 100.0, 110.0, 99.0, 109.0, 1000.0, 104.5, 50, 10)],
    "bars_1d": [(T0.replace(hour=0), 100.0, 110.0, 99.0, 109.0, 1000.0, 104.5, 50, 10)],
}
AGGREGATE_QUERY = (
    "SELECT ts, open, high, low, close, volume, vwap, trade_count, bar_count FROM tenant_view.{name} "
    "WHERE symbol = %s ORDER BY ts"
)


def cli(s: Settings, *args: str, **env: str) -> Result:
    """`mds-sink ARGS` in this process, with the database settings of `s` (and extra environment)."""
    base = {
        "MDS_SINK_DATABASE__URL": s.database.url.get_secret_value(),
        "MDS_SINK_DATABASE__OWNER_URL": owner_url(s),
        "MDS_SINK_DATABASE__READER_URL": reader_url(s),
    }
    return CliRunner().invoke(app, list(args), env={**base, **env})
