"""The control plane on plain PostgreSQL: every command works without TimescaleDB and says what it did."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from mds_sink.config.settings import Settings, load_settings
from mds_sink.core.catalog import TENANT_TABLES
from tests.control import (
    AGGREGATE_QUERY,
    EXPECTED_AGGREGATES,
    MINUTE,
    T0,
    bar_row,
    cli,
    minute_bars,
    write_bars,
)
from tests.throwaway import migrated, owner_url, reader_url

BAR_COLUMNS = (
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
)
NO_TIMESCALEDB = (
    "note: TimescaleDB is not installed in this database: tables stay plain PostgreSQL tables in rls isolation "
    "(no chunks, no compression); retention is `mds-sink admin retention apply`, which deletes old rows in "
    "batches (schedule it)\n"
)


@pytest.fixture(scope="module")
def db() -> Iterator[tuple[Settings, str, str]]:
    base = load_settings()
    with migrated(base, owner_url(base)) as s:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        with psycopg.connect(owner_url(s), autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'acme'), (%s, 'globex')", (a, b))
        yield s, a, b


def test_policies_apply_makes_plain_aggregate_views_once_and_says_so(db: tuple[Settings, str, str]) -> None:
    s, _, _ = db
    first = cli(s, "admin", "policies", "apply")
    assert first.exit_code == 0, first.output
    assert first.stdout == (
        "bars_5m: plain view created (5 minutes buckets of 1m bars, computed when read: nothing to refresh)\n"
        "bars_1h: plain view created (1 hour buckets of 1m bars, computed when read: nothing to refresh)\n"
        "bars_1d: plain view created (1 day buckets of 1m bars, computed when read: nothing to refresh)\n"
        + NO_TIMESCALEDB
    )
    again = cli(s, "admin", "policies", "apply")
    assert again.stdout == NO_TIMESCALEDB + "nothing to change: the database matches the policy settings\n"
    shown = json.loads(cli(s, "admin", "policies", "show", "--json").stdout)
    assert shown["timescaledb"] is None
    assert shown["pending"] == []
    assert {(t["table"], t["isolation"], t["hypertable"], t["reader_on_table"]) for t in shown["tables"]} == {
        (t, "rls", False, True) for t in TENANT_TABLES
    }
    retention = {t["table"]: t["retention"] for t in shown["tables"] if t["retention"]}
    assert retention == {
        "bars_minute": "6 months (admin retention apply)",
        "bars_hour": "2 years (admin retention apply)",
        "bars_day": "10 years (admin retention apply)",
        "quotes": "14 days (admin retention apply)",
    }
    assert [(a["aggregate"], a["kind"], a["tenant_view"]) for a in shown["aggregates"]] == [
        ("bars_1d", "view", True),
        ("bars_1h", "view", True),
        ("bars_5m", "view", True),
    ]


def test_plain_aggregates_compute_5m_1h_1d_bars_per_tenant(db: tuple[Settings, str, str]) -> None:
    s, a, b = db
    assert cli(s, "admin", "policies", "apply").exit_code == 0
    write_bars(
        s,
        [
            *minute_bars(a, "AGG", T0, 10, 100.0),
            *minute_bars(b, "AGG", T0, 3, 500.0),
            bar_row(a, "AGG", T0, 1.0, timeframe="5m"),  # a vendor's own 5m bar: not an input
        ],
    )
    with psycopg.connect(reader_url(s)) as conn:
        for name, expected in EXPECTED_AGGREGATES.items():
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (a,))
                assert conn.execute(AGGREGATE_QUERY.format(name=name), ("AGG",)).fetchall() == expected, name
            # No context, no rows; and the aggregate itself is not the reader's to select.
            assert conn.execute(AGGREGATE_QUERY.format(name=name), ("AGG",)).fetchall() == []
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT count(*) FROM public.{name}")
            conn.rollback()
    refreshed = cli(s, "admin", "aggregates", "refresh", "--from", "2026-11-20", "--to", "2026-11-21")
    assert (refreshed.exit_code, refreshed.stdout) == (
        0,
        "bars_5m, bars_1h, bars_1d: plain views computed when read (no TimescaleDB): nothing to refresh, "
        "they always show the current bars\n",
    )


def test_retention_deletes_old_rows_of_every_tenant_in_bounded_batches(db: tuple[Settings, str, str]) -> None:
    s, a, b = db
    old = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=40)
    recent = old + timedelta(days=39)
    write_bars(
        s,
        [
            *minute_bars(a, "RET", old, 5, 10.0),
            *minute_bars(b, "RET", old, 3, 20.0),
            *minute_bars(a, "RET", recent, 2, 30.0),
        ],
    )
    done = cli(
        s,
        "admin",
        "retention",
        "apply",
        MDS_SINK_POLICIES__BARS_MINUTE__KEEP="30 days",
        MDS_SINK_POLICIES__RETENTION_BATCH_ROWS="2",
    )
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == "no TimescaleDB: deleting old rows in batches of 2"
    # A: 5 old rows in batches of 2, 2, 1; B: 3 in 2, 1.
    assert re.fullmatch(
        r"bars_minute: deleted 8 rows older than \S+ \S+ \(keep 30 days\) in 5 batches \(plain PostgreSQL\)", lines[1]
    )
    assert lines[-1] == "kept forever (no keep setting): fundamentals, news, option_snapshots"
    for tenant, left in ((a, [(recent, 30.0), (recent + MINUTE, 31.0)]), (b, [])):
        with psycopg.connect(reader_url(s)) as conn, conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            got = conn.execute("SELECT ts, close FROM tenant_view.bars WHERE symbol = 'RET' ORDER BY ts").fetchall()
        assert got == left


def test_query_commands_read_one_tenant_as_the_reader(db: tuple[Settings, str, str]) -> None:
    s, a, b = db
    write_bars(s, [*minute_bars(a, "QRY", T0, 3, 50.0), *minute_bars(b, "QRY", T0, 1, 70.0)])
    prices = cli(s, "query", "latest-prices", "--tenant", "acme", "--symbols", "qry, NONE", "--json")
    assert prices.exit_code == 0, prices.output
    assert [{k: v for k, v in p.items() if k != "updated_at"} for p in json.loads(prices.stdout)] == [
        {
            "vendor": "polygon",
            "symbol": "QRY",
            "price": 52.0,
            "bid": None,
            "ask": None,
            "ts": "2026-11-20T15:02:00+00:00",
            "source": "bar",
        }
    ]
    bars = cli(s, "query", "bars", "--tenant", b, "--symbol", "QRY", "--from", "2026-11-20", "--to", "2026-11-21")
    assert bars.exit_code == 0, bars.output
    lines = bars.stdout.splitlines()
    assert [lines[0].split(), lines[2].split(), lines[3:]] == [
        [*BAR_COLUMNS],
        [
            "2026-11-20T15:00:00+00:00",
            "polygon",
            "QRY",
            "1m",
            "70.0",
            "71.0",
            "69.0",
            "70.0",
            "100.0",
            "70.0",
            "5",
            "0",
        ],
        ["(1 row)"],
    ]
    as_json = cli(
        s, "query", "bars", "--tenant", b, "--symbol", "QRY", "--from", "2026-11-20", "--to", "2026-11-21", "--json"
    )
    assert json.loads(as_json.stdout) == [
        dict(
            zip(
                BAR_COLUMNS,
                ["2026-11-20T15:00:00+00:00", "polygon", "QRY", "1m", 70.0, 71.0, 69.0, 70.0, 100.0, 70.0, 5, 0],
                strict=True,
            )
        )
    ]
    unknown = cli(
        s, "query", "bars", "--tenant", "nobody", "--symbol", "QRY", "--from", "2026-11-20", "--to", "2026-11-21"
    )
    assert (unknown.exit_code, unknown.stderr) == (1, "mds-sink: no tenant named 'nobody' (give its name or UUID)\n")
