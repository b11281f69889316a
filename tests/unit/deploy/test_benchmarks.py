"""The benchmark's pure parts: its data set and its arithmetic (the figures are only as good as these)."""

from __future__ import annotations

import math

import pytest

from benchmarks import data, run
from benchmarks.sidebyside import Round, Side
from benchmarks.stats import Commit, commit_latencies, parse_stat_cpu, parse_status_kb, percentile
from mds_sink.core.validate import TIMEFRAMES

SMALL = data.Shape(records=5_000, partitions=3, tenants=4, symbols=50, quote_share=0.2)


def test_records_are_a_function_of_their_index() -> None:
    tenants = SMALL.tenant_ids()
    assert data.bar(SMALL, tenants, 1234) == data.bar(SMALL, tenants, 1234)
    assert tenants == data.Shape(records=9, tenants=4).tenant_ids()[:4]


def test_distinct_counts_match_the_keys_generated() -> None:
    tenants = SMALL.tenant_ids()
    bars = {
        (r["ts"], r["tenant_id"], r["vendor"], r["symbol"], r["timeframe"])
        for r in (data.bar(SMALL, tenants, i)[1] for i in range(SMALL.records))
    }
    quotes = {
        (r["ts"], r["tenant_id"], r["vendor"], r["symbol"])
        for r in (data.quote(SMALL, tenants, i)[1] for i in range(SMALL.quotes))
    }
    assert len(bars) == data.distinct_bars(SMALL) < SMALL.records
    assert len(quotes) == data.distinct_quotes(SMALL) == SMALL.quotes


def test_bars_are_valid_market_data_in_the_past() -> None:
    tenants = SMALL.tenant_ids()
    for i in range(0, SMALL.records, 7):
        key, r = data.bar(SMALL, tenants, i)
        assert r["timeframe"] in TIMEFRAMES
        assert r["low"] <= min(r["open"], r["close"]) <= max(r["open"], r["close"]) <= r["high"]
        assert 0 < r["ts"] < data.END_US
        assert key == f"{r['tenant_id']}|{r['vendor']}|{r['symbol']}".encode()


def test_tickers_are_unique_upper_case() -> None:
    names = [data.ticker(n) for n in range(20_000)]
    assert len(set(names)) == len(names)
    assert all(n.isalpha() and n.isupper() for n in names)


def test_proc_parsing() -> None:
    stat = "4242 (mds sink (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 2000000 500"
    assert parse_stat_cpu(stat, 100) == 3.0
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert parse_status_kb(status, "VmHWM") == 204_800
    assert parse_status_kb(status, "VmSwap") == 0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert math.isnan(percentile([], 50))


def test_latency_is_the_first_poll_that_saw_the_record_committed() -> None:
    produced = {0: [(0, 1000.0), (1, 1010.0), (2, 1020.0)], 1: [(0, 1000.0)]}
    commits = [Commit(1300.0, 0, 2), Commit(1250.0, 1, 0), Commit(1600.0, 0, 3), Commit(1700.0, 0, 3)]
    # Partition 1 was seen at offset 0 only: nothing of it committed yet, so no latency for it.
    assert sorted(commit_latencies(produced, commits)) == [290.0, 300.0, 580.0]


def test_side_by_side_compares_what_each_sink_committed_in_the_same_window() -> None:
    r = Round(a=Side(records=400_000, cpu_s=8.0), b=Side(records=420_000, cpu_s=7.0), seconds=20.0, b_first=True)
    assert r.ratio == 1.05
    assert (r.a.rate(r.seconds), r.b.rate(r.seconds)) == (20_000.0, 21_000.0)
    assert (r.a.cpu_s_per_million, r.b.cpu_s_per_million) == (20.0, 7.0 / 420_000 * 1e6)


def test_side_by_side_arguments_are_checked_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, said in (
        (["--modes", "sidebyside"], "go together"),
        (["--modes", "e2e", "--b-env", "MDS_SINK_X=1"], "go together"),
        (["--modes", "sidebyside", "--b-env", "X=1"], "--b-env: wants MDS_SINK_NAME=VALUE or PYTHONPATH=DIR"),
        (["--sink-env", "FOO"], "--sink-env: wants MDS_SINK_NAME=VALUE, got 'FOO'"),
    ):
        with pytest.raises(SystemExit):
            run.parse_args(argv)
        assert said in capsys.readouterr().err
    args = run.parse_args(["--modes", "sidebyside", "--b-env", "PYTHONPATH=/elsewhere/src"])
    assert args.b_env == ["PYTHONPATH=/elsewhere/src"]
