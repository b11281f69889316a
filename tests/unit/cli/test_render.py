"""The one table and JSON renderer of the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from mds_sink.cli.render import json_rows, table
from mds_sink.control.query import Result

RESULT = Result(
    ("symbol", "price", "ts", "source"),
    [("AAPL", 189.5, datetime(2026, 11, 20, 15, 0, tzinfo=UTC), "bar"), ("MSFT", None, None, "quote")],
)


def test_table_output_aligns_columns_and_counts_rows() -> None:
    assert table(RESULT.columns, RESULT.rows, count=True).splitlines() == [
        "symbol  price  ts                         source",
        "------  -----  -------------------------  ------",
        "AAPL    189.5  2026-11-20T15:00:00+00:00  bar",
        "MSFT                                      quote",
        "(2 rows)",
    ]
    assert table(("a",), [], count=True).splitlines() == ["a", "-", "(0 rows)"]


def test_json_output_is_one_object_per_row() -> None:
    assert json.loads(json_rows(RESULT.columns, RESULT.rows)) == [
        {"symbol": "AAPL", "price": 189.5, "ts": "2026-11-20T15:00:00+00:00", "source": "bar"},
        {"symbol": "MSFT", "price": None, "ts": None, "source": "quote"},
    ]
