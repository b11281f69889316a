"""latest_prices at an equal ts: a quote, then the finest bar, whatever the order or batching they arrive in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from mds_sink.config.settings import load_settings
from mds_sink.db import migrate
from tests.support import SESSION_START, Scenario, bar, drained, iso_ts, make_scenario, running_sink, wait_until
from tests.throwaway import database_settings, owner_url, throwaway_database

PRICES = "SELECT symbol, price, bid, ask, ts, source FROM latest_prices ORDER BY symbol"
T0 = datetime.fromtimestamp(SESSION_START, UTC)
T60 = datetime.fromtimestamp(SESSION_START + 3600, UTC)


def quote(tenant: str, symbol: str, minute: int, *, bid: float, ask: float) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "vendor": "polygon",
        "symbol": symbol,
        "ts": iso_ts(SESSION_START + 60 * minute),
        "bid": bid,
        "ask": ask,
        "bid_size": 100.0,
        "ask_size": 100.0,
    }


def drain(scenario: Scenario, worker: Any, records: dict[str, list[dict[str, Any]]], what: str) -> None:
    for table, rows in records.items():
        scenario.produce(table, rows)
    ends = scenario.end_offsets()
    wait_until(lambda: drained(worker, ends), what=what)


def test_bars_of_two_timeframes_at_one_ts_in_one_batch_keep_the_finest() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"], batching={"max_rows": 12, "max_ms": 600_000})
    t = scenario.add_tenant("tie1")
    # Twelve rows and max_rows 12 with no time limit: the sink flushes them as exactly one batch, in
    # this order (one partition). Pairs in both orders, within one table and across two.
    records = [
        bar(t, "MIN_5M", 0, close=10.0, timeframe="1m"),
        bar(t, "MIN_5M", 0, close=20.0, timeframe="5m"),
        bar(t, "5M_MIN", 0, close=20.0, timeframe="5m"),
        bar(t, "5M_MIN", 0, close=10.0, timeframe="1m"),
        bar(t, "MIN_HOUR", 0, close=10.0, timeframe="1m"),
        bar(t, "MIN_HOUR", 0, close=30.0, timeframe="1h"),
        bar(t, "HOUR_MIN", 0, close=30.0, timeframe="1h"),
        bar(t, "HOUR_MIN", 0, close=10.0, timeframe="1m"),
        bar(t, "WEEK_DAY", 0, close=40.0, timeframe="1w"),
        bar(t, "WEEK_DAY", 0, close=50.0, timeframe="1d"),
        bar(t, "LATER_HOUR", 0, close=10.0, timeframe="1m"),
        bar(t, "LATER_HOUR", 60, close=30.0, timeframe="1h"),  # a later ts wins whatever its timeframe
    ]
    with running_sink(scenario.settings) as worker:
        drain(scenario, worker, {"bars": records}, "the batch committed")
    assert scenario.rows(t, "SELECT count(*), count(DISTINCT ingested_at) FROM bars") == [(12, 1)]  # one flush
    assert scenario.rows(t, PRICES) == [
        ("5M_MIN", 10.0, None, None, T0, "bar"),
        ("HOUR_MIN", 10.0, None, None, T0, "bar"),
        ("LATER_HOUR", 30.0, None, None, T60, "bar"),
        ("MIN_5M", 10.0, None, None, T0, "bar"),
        ("MIN_HOUR", 10.0, None, None, T0, "bar"),
        ("WEEK_DAY", 50.0, None, None, T0, "bar"),
    ]


def test_equal_ts_prices_in_separate_batches_keep_the_quote_then_the_finest_bar_in_either_order() -> None:
    scenario = make_scenario(partitions=1, tables=["bars", "quotes"])
    t = scenario.add_tenant("tie2")
    first = {
        "bars": [
            bar(t, "MIN_5M", 0, close=10.0, timeframe="1m"),
            bar(t, "5M_MIN", 0, close=20.0, timeframe="5m"),
            bar(t, "MIN_HOUR", 0, close=10.0, timeframe="1m"),
            bar(t, "HOUR_MIN", 0, close=30.0, timeframe="1h"),
            bar(t, "BAR_QUOTE", 0, close=10.0, timeframe="1m"),
            bar(t, "LATER_QUOTE", 60, close=30.0, timeframe="1h"),
            bar(t, "CORRECTED", 0, close=10.0, timeframe="1m"),
        ],
        "quotes": [quote(t, "QUOTE_BAR", 0, bid=1.0, ask=3.0)],
    }
    second = {
        "bars": [
            bar(t, "MIN_5M", 0, close=20.0, timeframe="5m"),  # coarser, later: does not replace
            bar(t, "5M_MIN", 0, close=10.0, timeframe="1m"),  # finer, later: replaces
            bar(t, "MIN_HOUR", 0, close=30.0, timeframe="1h"),
            bar(t, "HOUR_MIN", 0, close=10.0, timeframe="1m"),
            bar(t, "QUOTE_BAR", 0, close=10.0, timeframe="1m"),  # a bar never replaces a quote at its ts
            bar(t, "CORRECTED", 0, close=11.0, timeframe="1m", revision=1),  # same rank: the newer value
        ],
        "quotes": [
            quote(t, "BAR_QUOTE", 0, bid=1.0, ask=3.0),  # a quote replaces any bar at its ts
            quote(t, "LATER_QUOTE", 0, bid=1.0, ask=3.0),  # but never a price of a later ts
        ],
    }
    with running_sink(scenario.settings) as worker:
        drain(scenario, worker, first, "the first batches committed")
        drain(scenario, worker, second, "the second batches committed")
    assert scenario.rows(t, "SELECT count(DISTINCT ingested_at) FROM bars WHERE symbol = 'MIN_5M'") == [(2,)]
    assert scenario.rows(t, PRICES) == [
        ("5M_MIN", 10.0, None, None, T0, "bar"),
        ("BAR_QUOTE", 2.0, 1.0, 3.0, T0, "quote"),
        ("CORRECTED", 11.0, None, None, T0, "bar"),
        ("HOUR_MIN", 10.0, None, None, T0, "bar"),
        ("LATER_QUOTE", 30.0, None, None, T60, "bar"),
        ("MIN_5M", 10.0, None, None, T0, "bar"),
        ("MIN_HOUR", 10.0, None, None, T0, "bar"),
        ("QUOTE_BAR", 2.0, 1.0, 3.0, T0, "quote"),
    ]


def test_upgrading_to_0005_ranks_the_prices_already_stored() -> None:
    """Rows written before precedence existed get the rank of the bar they came from, found in the bars."""
    base = load_settings()
    with throwaway_database(owner_url(base)) as name:
        s = database_settings(base, name)
        migrate.upgrade(s, "0004")
        tenant = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
        with psycopg.connect(owner_url(s)) as conn, conn.transaction():
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'before-0005')", (tenant,))
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            for table, symbol, timeframe, close in (
                ("bars_minute", "MIN", "5m", 10.0),
                ("bars_hour", "MIN", "1h", 30.0),  # same ts, another close: the 5m bar is the one stored
                ("bars_hour", "HOUR", "4h", 30.0),
                ("bars_day", "BOTH", "1d", 50.0),
                ("bars_day", "BOTH", "1w", 50.0),  # same close at the same ts: the finer of the two
            ):
                conn.execute(
                    f"INSERT INTO {table} (ts, tenant_id, vendor, symbol, timeframe, open, high, low, close, volume) "
                    "VALUES (%s, %s, 'polygon', %s, %s, %s, %s, %s, %s, 1)",
                    (T0, tenant, symbol, timeframe, close, close, close, close),
                )
            for symbol, price, source in (
                ("MIN", 10.0, "bar"),
                ("HOUR", 30.0, "bar"),
                ("BOTH", 50.0, "bar"),
                ("GONE", 70.0, "bar"),  # its bar is no longer stored (retention): the lowest bar rank
                ("QUOTE", 2.0, "quote"),
            ):
                conn.execute(
                    "INSERT INTO latest_prices (tenant_id, vendor, symbol, price, ts, source) "
                    "VALUES (%s, 'polygon', %s, %s, %s, %s)",
                    (tenant, symbol, price, T0, source),
                )
        migrate.upgrade(s, "0005")
        with psycopg.connect(owner_url(s)) as conn, conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            ranks = conn.execute("SELECT symbol, precedence FROM latest_prices ORDER BY symbol").fetchall()
    assert ranks == [("BOTH", 2), ("GONE", 1), ("HOUR", 3), ("MIN", 7), ("QUOTE", 9)]


def test_crossed_and_locked_quotes_are_dead_lettered_or_kept_without_moving_the_latest_price() -> None:
    rejecting = make_scenario(partitions=1, tables=["quotes"])
    t = rejecting.add_tenant("crossed")
    quotes = [
        quote(t, "CROSS", 0, bid=1.0, ask=3.0),
        quote(t, "CROSS", 1, bid=3.5, ask=3.0),  # crossed
        quote(t, "CROSS", 2, bid=3.0, ask=3.0),  # locked
    ]
    with running_sink(rejecting.settings) as worker:
        drain(rejecting, worker, {"quotes": quotes}, "the quotes committed")
    letters = [dict(m.headers() or []) for m in rejecting.dead_letters("quotes", expect=2)]
    assert sorted((h["mds.dlq.source.offset"], h["mds.dlq.reason"]) for h in letters) == [
        (b"1", b"crossed_quote"),
        (b"2", b"locked_quote"),
    ]
    assert rejecting.rows(t, "SELECT count(*) FROM quotes") == [(1,)]

    keeping = make_scenario(partitions=1, tables=["quotes"], validation={"crossed_quotes": "keep"})
    k = keeping.add_tenant("kept")
    quotes = [
        quote(k, "CROSS", 0, bid=1.0, ask=3.0),
        quote(k, "CROSS", 1, bid=3.5, ask=3.0),
        quote(k, "CROSS", 2, bid=3.0, ask=3.0),
    ]
    with running_sink(keeping.settings) as worker:
        drain(keeping, worker, {"quotes": quotes}, "the quotes committed")
    assert keeping.dead_letters("quotes", expect=0) == []
    # Kept as they came, marked by bid >= ask; the latest price is still the last sound quote's.
    assert keeping.rows(k, "SELECT bid, ask, bid >= ask FROM quotes ORDER BY ts") == [
        (1.0, 3.0, False),
        (3.5, 3.0, True),
        (3.0, 3.0, True),
    ]
    assert keeping.rows(k, PRICES) == [("CROSS", 2.0, 1.0, 3.0, T0, "quote")]
