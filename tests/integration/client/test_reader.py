"""The Reader on a tenant's own credential and on the gateway's: results equal to the same SQL run directly
through tenant_view, typed; another tenant's rows never seen; the aggregates where no bars are stored."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from mds_sink.client.publisher import Publisher
from mds_sink.client.reader import AsyncReader, BarRow, LatestPrice, Reader, as_dicts
from mds_sink.client.records import Bar, Quote
from mds_sink.control import tenants
from mds_sink.errors import QueryError
from tests.control import cli
from tests.support import SESSION_START, Scenario, drained, make_scenario, running_sink, wait_until
from tests.throwaway import with_user

START = datetime.fromtimestamp(SESSION_START, UTC)
END = START + timedelta(hours=1)


def bar(tenant: str, symbol: str, minute: int, close: float) -> Bar:
    return Bar(
        tenant_id=tenant,
        vendor="polygon",
        symbol=symbol,
        timeframe="1m",
        ts=START + timedelta(minutes=minute),
        open=close,
        high=close + 1,
        low=close - 1,
        close=close,
        volume=10.0 * (minute + 1),
    )


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Scenario, str, str, str]]:
    """Tenants A and B with bars and a quote written by the sink; A's own reader credential (a URL)."""
    scenario = make_scenario(partitions=2, tables=["bars", "quotes"])
    a, b = scenario.add_tenant("read-a"), scenario.add_tenant("read-b")
    with Publisher(scenario.settings) as publisher:
        publisher.publish_many([bar(a, "AAPL", m, 100.0 + m) for m in range(5)])
        publisher.publish_many([bar(b, "AAPL", m, 500.0 + m) for m in range(5)])
        publisher.publish(
            Quote(
                tenant_id=a,
                vendor="iex",
                symbol="MSFT",
                ts=START,
                bid=300.0,
                ask=301.0,
                bid_size=1,
                ask_size=1,
            )
        )
    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), timeout_s=60, what="the sink to commit every record")
    # The 5m/1h/1d aggregates the bars_window test falls back to (idempotent: made once per database).
    applied = cli(scenario.settings, "admin", "policies", "apply")
    assert applied.exit_code == 0, applied.output
    roles_url = os.environ["MDS_SINK_DATABASE__ROLES_URL"]
    credential = tenants.create_reader(scenario.owner_url, roles_url, a)
    try:
        yield scenario, a, b, with_user(scenario.owner_url, credential.role, credential.password)
    finally:
        tenants.drop_reader(scenario.owner_url, roles_url, credential.role)


def direct(url: str, tenant: str | None, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        if tenant is not None:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        return conn.execute(query, params).fetchall()


LATEST = (
    "SELECT vendor, symbol, price, bid, ask, ts, source, updated_at FROM tenant_view.latest_prices "
    "WHERE symbol = ANY(%(symbols)s) ORDER BY symbol, vendor"
)
BARS = (
    "SELECT ts, vendor, symbol, timeframe, open, high, low, close, volume, vwap, trade_count, revision "
    "FROM tenant_view.bars WHERE symbol = 'AAPL' AND timeframe = '1m' AND ts >= %(start)s AND ts < %(end)s ORDER BY ts"
)


def test_a_tenant_reader_reads_its_own_tenant_as_the_views_show_it(world: tuple[Scenario, str, str, str]) -> None:
    _scenario, a, _b, url = world
    with Reader(url) as reader:
        assert reader.tenant_id == a
        prices = reader.latest_prices([" aapl", "MSFT"])
        window = reader.bars_window("AAPL", "1m", START, END)
        iex_only = reader.latest_prices(["AAPL", "MSFT"], vendor="iex")
    assert prices == [LatestPrice(*row) for row in direct(url, None, LATEST, {"symbols": ["AAPL", "MSFT"]})]
    assert [(p.vendor, p.symbol, p.price, p.source) for p in prices] == [
        ("polygon", "AAPL", 104.0, "bar"),
        ("iex", "MSFT", 300.5, "quote"),
    ]
    assert [p.symbol for p in iex_only] == ["MSFT"]
    assert window == [BarRow(*row) for row in direct(url, None, BARS, {"start": START, "end": END})]
    assert [(r.ts, r.close, r.volume) for r in window] == [
        (START + timedelta(minutes=m), 100.0 + m, 10.0 * (m + 1)) for m in range(5)
    ]
    assert as_dicts(window[:1])[0]["close"] == 100.0


def test_the_gateway_reads_the_tenant_it_names_and_a_tenant_reader_no_other(
    world: tuple[Scenario, str, str, str],
) -> None:
    scenario, _a, b, url = world
    with Reader(scenario.reader_url, tenant=b) as gateway:
        got = gateway.bars_window("AAPL", "1m", START, END)
    assert got == [BarRow(*row) for row in direct(scenario.reader_url, b, BARS, {"start": START, "end": END})]
    assert [r.close for r in got] == [500.0 + m for m in range(5)]
    with pytest.raises(QueryError, match=r"reads tenant .* only"):
        Reader(url, tenant=b)
    with pytest.raises(QueryError, match=r"is a gateway reader: --tenant is required$"):
        Reader(scenario.reader_url)


def test_bars_window_reads_the_aggregate_where_no_bars_of_its_timeframe_are_stored(
    world: tuple[Scenario, str, str, str],
) -> None:
    # Through the gateway: on PostgreSQL without TimescaleDB the aggregate views are security_invoker
    # views over bars_minute, which a tenant reader may not select: it is told so in one line.
    scenario, a, _b, url = world
    aggregate = (
        "SELECT ts, vendor, symbol, '5m', open, high, low, close, volume, vwap, trade_count, 0 "
        "FROM tenant_view.bars_5m WHERE symbol = 'AAPL' AND ts >= %(start)s AND ts < %(end)s ORDER BY ts"
    )
    with Reader(scenario.reader_url, tenant=a) as reader:
        window = reader.bars_window("AAPL", "5m", START, END)
    with Reader(url) as tenant_reader, pytest.raises(QueryError) as refused:
        tenant_reader.bars_window("AAPL", "5m", START, END)
    assert str(refused.value) == (
        f"no 5m bars stored in the range, and role {tenant_reader.role} may not read the aggregate "
        "tenant_view.bars_5m (permission denied for table bars_minute)"
    )
    assert window == [BarRow(*row) for row in direct(scenario.reader_url, a, aggregate, {"start": START, "end": END})]
    # The five 1m bars of A (never B's) as one 5m bar: first open, highest high, lowest low, last close.
    assert [(r.ts, r.timeframe, r.open, r.high, r.low, r.close, r.volume, r.revision) for r in window] == [
        (START, "5m", 100.0, 105.0, 99.0, 104.0, 150.0, 0)
    ]


def test_the_async_reader_answers_as_the_reader_does(world: tuple[Scenario, str, str, str]) -> None:
    _scenario, _a, _b, url = world

    async def read() -> tuple[list[LatestPrice], list[BarRow]]:
        async with await AsyncReader.connect(url) as reader:
            return await reader.latest_prices(["AAPL"]), await reader.bars_window("AAPL", "1m", START, END)

    prices, window = asyncio.run(asyncio.wait_for(read(), timeout=30))
    with Reader(url) as reader:
        assert (prices, window) == (reader.latest_prices(["AAPL"]), reader.bars_window("AAPL", "1m", START, END))
