from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mds_sink.control.query import Result, normalise_symbols, render_json, render_table
from mds_sink.errors import QueryError

RESULT = Result(
    ("symbol", "price", "ts", "source"),
    [("AAPL", 189.5, datetime(2026, 11, 20, 15, 0, tzinfo=UTC), "bar"), ("MSFT", None, None, "quote")],
)


def test_symbols_are_trimmed_and_upper_cased_like_the_sink_stores_them() -> None:
    assert normalise_symbols(" aapl, MSFT ,,brk.b") == ["AAPL", "MSFT", "BRK.B"]
    with pytest.raises(QueryError, match="no symbols"):
        normalise_symbols(" , ")


def test_table_output_aligns_columns_and_counts_rows() -> None:
    assert render_table(RESULT).splitlines() == [
        "symbol  price  ts                         source",
        "------  -----  -------------------------  ------",
        "AAPL    189.5  2026-11-20T15:00:00+00:00  bar",
        "MSFT                                      quote",
        "(2 rows)",
    ]
    assert render_table(Result(("a",), [])).splitlines() == ["a", "-", "(0 rows)"]


def test_json_output_is_one_object_per_row() -> None:
    assert json.loads(render_json(RESULT)) == [
        {"symbol": "AAPL", "price": 189.5, "ts": "2026-11-20T15:00:00+00:00", "source": "bar"},
        {"symbol": "MSFT", "price": None, "ts": None, "source": "quote"},
    ]
