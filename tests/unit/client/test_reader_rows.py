"""The readers' rows as dictionaries and as a pandas DataFrame (pandas is optional: without it, one clear
ImportError)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest

from mds_sink.client.reader import BarRow, LatestPrice, as_dataframe, as_dicts

TS = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
BARS = [
    BarRow(TS, "polygon", "AAPL", "1m", 10.0, 11.0, 9.5, 10.5, 1000.0, 10.25, 12, 0),
    BarRow(TS.replace(minute=31), "polygon", "AAPL", "1m", 10.5, 10.75, 10.0, 10.5, 500.0, None, None, 1),
]
PRICES = [LatestPrice("iex", "MSFT", 300.5, 300.0, 301.0, TS, "quote", TS.replace(second=1))]


def test_rows_as_dicts_have_every_field_in_order() -> None:
    assert as_dicts(PRICES) == [
        {
            "vendor": "iex",
            "symbol": "MSFT",
            "price": 300.5,
            "bid": 300.0,
            "ask": 301.0,
            "ts": TS,
            "source": "quote",
            "updated_at": TS.replace(second=1),
        }
    ]


def test_without_pandas_as_dataframe_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an environment without pandas gives import
    with pytest.raises(ImportError) as raised:
        as_dataframe(BARS)
    assert str(raised.value) == (
        "as_dataframe needs pandas, which mds-sink does not install: install pandas beside it, or use as_dicts(rows)"
    )


def test_as_dataframe_has_a_column_per_field_and_a_row_per_row() -> None:
    pandas = pytest.importorskip("pandas")  # optional: this runs where pandas is installed
    frame = as_dataframe(BARS)
    assert list(frame.columns) == [
        "ts",
        "vendor",
        "symbol",
        "timeframe",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
        "revision",
    ]
    assert len(frame) == 2
    assert list(frame["ts"]) == [pandas.Timestamp(TS), pandas.Timestamp(TS.replace(minute=31))]
    assert list(frame["close"]) == [10.5, 10.5]
    assert list(frame["volume"]) == [1000.0, 500.0]
    assert frame["vwap"][0] == 10.25 and pandas.isna(frame["vwap"][1])
    assert frame["trade_count"][0] == 12 and pandas.isna(frame["trade_count"][1])
    assert list(frame["revision"]) == [0, 1]
    prices = as_dataframe(PRICES)
    assert prices.to_dict("records") == [
        {
            "vendor": "iex",
            "symbol": "MSFT",
            "price": 300.5,
            "bid": 300.0,
            "ask": 301.0,
            "ts": pandas.Timestamp(TS),
            "source": "quote",
            "updated_at": pandas.Timestamp(TS.replace(second=1)),
        }
    ]
    empty = as_dataframe([])
    assert len(empty) == 0
