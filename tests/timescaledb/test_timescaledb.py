"""On a real TimescaleDB: policies, guard isolation with compression and continuous aggregates,
upserts into compressed chunks, retention by chunks, migrations up and down."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from mds_sink.config.settings import Settings
from mds_sink.control import policy_db, query
from mds_sink.control.isolation import Isolation
from mds_sink.db import migrate
from mds_sink.db.preflight import check_database
from mds_sink.db.sql import SET_TENANT
from tests.control import (
    AGGREGATE_QUERY,
    EXPECTED_AGGREGATES,
    MINUTE,
    T0,
    bar_row,
    cli,
    minute_bars,
    write_bars,
    writer_pool,
)
from tests.throwaway import database_settings, migrated, owner_url, reader_url, throwaway_database

pytestmark = pytest.mark.timescaledb

BAR_TABLES = ("bars_minute", "bars_hour", "bars_day")
OTHER_HYPERTABLES = ("quotes", "fundamentals", "news", "option_snapshots")


@dataclass
class Tsdb:
    settings: Settings
    a: str
    b: str
    applied: str  # what the first `admin policies apply` printed


def pause_jobs(s: Settings) -> None:
    """Policies stay defined but their background jobs stop: a compression or retention job racing a test
    (compressing the chunk it is about to compress, dropping the chunk it is about to drop) makes it flaky."""
    with psycopg.connect(owner_url(s), autocommit=True) as conn:
        conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
            "WHERE hypertable_schema = 'public'"
        )


@pytest.fixture(scope="module")
def tsdb(superuser_url: str, timescale_base: Settings) -> Iterator[Tsdb]:
    with migrated(timescale_base, superuser_url, timescaledb=True) as s:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        with psycopg.connect(owner_url(s), autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'acme'), (%s, 'globex')", (a, b))
        applied = cli(s, "admin", "policies", "apply")
        assert applied.exit_code == 0, applied.output
        pause_jobs(s)
        yield Tsdb(s, a, b, applied.stdout)


def _guard_switch(table: str) -> str:
    return (
        f"{table}: isolation rls -> guard in this transaction: TimescaleDB refuses compression on a table with row "
        f"security; the tenant_guard triggers reject other tenants' writes (42501), readers use tenant_view.{table}"
    )


def _aggregate_lines(name: str, bucket: str, every: str, start: str, end: str) -> list[str]:
    return [
        f"{name}: continuous aggregate created ({bucket} buckets of 1m bars; real-time), materialized by its "
        "refresh policy",
        f"{name}: refresh policy: every {every}, window [now - {start}, now - {end})",
    ]


def test_policies_apply_switches_compressed_tables_to_guard_and_is_idempotent(tsdb: Tsdb) -> None:
    layout = "segment by tenant_id, symbol; order by ts DESC, vendor, timeframe"
    assert tsdb.applied.splitlines() == [
        _guard_switch("bars_minute"),
        f"bars_minute: compression on: {layout}",
        "bars_minute: compression policy: compress chunks older than 1 day (was none)",
        "bars_minute: retention policy: drop chunks older than 6 months (was none)",
        *_aggregate_lines("bars_5m", "5 minutes", "5 minutes", "2 days", "5 minutes"),
        *_aggregate_lines("bars_1h", "1 hour", "30 minutes", "7 days", "1 hour"),
        *_aggregate_lines("bars_1d", "1 day", "1 hour", "30 days", "1 day"),
        _guard_switch("bars_hour"),
        f"bars_hour: compression on: {layout}",
        "bars_hour: compression policy: compress chunks older than 7 days (was none)",
        "bars_hour: retention policy: drop chunks older than 2 years (was none)",
        _guard_switch("bars_day"),
        f"bars_day: compression on: {layout}",
        "bars_day: compression policy: compress chunks older than 30 days (was none)",
        "bars_day: retention policy: drop chunks older than 10 years (was none)",
        "quotes: retention policy: drop chunks older than 14 days (was none)",
    ]
    again = cli(tsdb.settings, "admin", "policies", "apply")
    assert again.stdout == "nothing to change: the database matches the policy settings\n"
    with psycopg.connect(owner_url(tsdb.settings)) as conn:
        state = policy_db.read_state(conn, reader="mds_reader")
    guard = Isolation(rls=False, guard=True, reader_on_table=False)
    rls_and_guard = Isolation(rls=True, guard=True, reader_on_table=False)
    assert {t: state.tables[t].isolation for t in (*BAR_TABLES, *OTHER_HYPERTABLES)} == {
        **{t: guard for t in BAR_TABLES},
        **{t: rls_and_guard for t in OTHER_HYPERTABLES},
    }
    # Plain tables keep row security, and the reader may select them under it.
    assert state.tables["latest_prices"].isolation == Isolation(rls=True, guard=False, reader_on_table=True)
    minute = state.tables["bars_minute"]
    assert (minute.segmentby, minute.orderby) == (("tenant_id", "symbol"), ("ts DESC", "vendor", "timeframe"))
    assert [str(x) for x in (minute.chunk_interval, minute.compress_after, minute.keep)] == [
        "1 day",
        "1 day",
        "6 months",
    ]
    assert {n: a.kind for n, a in state.aggregates.items()} == {n: "continuous" for n in EXPECTED_AGGREGATES}
    shown = cli(tsdb.settings, "admin", "policies", "show").stdout.splitlines()
    assert shown[0] == f"timescaledb: {state.timescaledb}"
    assert shown[-1] == "nothing pending: the database matches the policy settings"


def test_the_sink_starts_against_guarded_and_rls_hypertables(tsdb: Tsdb) -> None:
    pool = writer_pool(tsdb.settings)
    try:
        assert check_database(tsdb.settings, pool) == migrate.head_revision(tsdb.settings)
    finally:
        pool.close()


def test_changed_settings_are_applied_and_reported(tsdb: Tsdb) -> None:
    env = {"MDS_SINK_POLICIES__QUOTES__KEEP": "21 days", "MDS_SINK_POLICIES__NEWS__CHUNK_INTERVAL": "14 days"}
    changed = cli(tsdb.settings, "admin", "policies", "apply", **env)
    assert changed.stdout.splitlines() == [
        "quotes: retention policy: drop chunks older than 21 days (was 14 days)",
        "news: chunk interval 30 days -> 14 days (applies to new chunks)",
    ]
    assert cli(tsdb.settings, "admin", "policies", "apply", **env).stdout.startswith("nothing to change")
    back = cli(tsdb.settings, "admin", "policies", "apply")
    pause_jobs(tsdb.settings)
    assert back.stdout.splitlines() == [
        "quotes: retention policy: drop chunks older than 14 days (was 21 days)",
        "news: chunk interval 14 days -> 30 days (applies to new chunks)",
    ]


def _chunks(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [
        (str(h), f"{s}.{c}")
        for h, s, c in conn.execute(
            "SELECT hypertable_name, chunk_schema, chunk_name FROM timescaledb_information.chunks ORDER BY 1, 3"
        )
    ]


def test_chunks_are_closed_to_the_reader_and_guarded_against_the_writer(tsdb: Tsdb) -> None:
    s, a, b = tsdb.settings, tsdb.a, tsdb.b
    write_bars(s, [bar_row(a, "CHK", T0, 1.0), bar_row(b, "CHK", T0, 2.0)])
    with psycopg.connect(s.database.url.get_secret_value(), autocommit=True) as conn, conn.transaction():
        conn.execute(SET_TENANT, (a,))
        conn.execute(
            "INSERT INTO tenant_view.quotes (ts, tenant_id, vendor, symbol, bid, ask, bid_size, ask_size) "
            "VALUES (%s, %s, 'v', 'CHK', 1, 2, 1, 1)",
            (T0, a),
        )
    with psycopg.connect(owner_url(s)) as conn:
        chunks = _chunks(conn)
        internal = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = '_timescaledb_internal'::regnamespace "
            "AND c.relkind IN ('r', 'v', 'm') AND has_table_privilege('mds_reader', c.oid, 'SELECT') "
            "AND (c.relname LIKE '%%chunk' OR c.relname LIKE '\\_materialized%%' OR c.relname LIKE '\\_%%view\\_%%')"
        ).fetchall()
    assert {h for h, _ in chunks} >= {"bars_minute", "quotes"}
    assert internal == []  # not one chunk, materialization or internal view is the reader's to select
    with psycopg.connect(reader_url(s)) as conn:
        for _, chunk in chunks:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(f"SELECT count(*) FROM {chunk}")
            conn.rollback()
    # Straight into a chunk, a row of B under A's context: the writer has no privilege on any chunk (0007);
    # the trigger on every chunk (guard and rls tables) would refuse it too.
    sneaks = {
        "bars_minute": "INSERT INTO {c} (ts, tenant_id, vendor, symbol, timeframe, open, high, low, close, volume) "
        "VALUES (%s, %s, 'v', 'SNEAK', '1m', 1, 1, 1, 1, 1)",
        "quotes": "INSERT INTO {c} (ts, tenant_id, vendor, symbol, bid, ask, bid_size, ask_size) "
        "VALUES (%s, %s, 'v', 'SNEAK', 1, 1, 1, 1)",
    }
    for hypertable, chunk in chunks:
        if hypertable not in sneaks:
            continue
        with psycopg.connect(s.database.url.get_secret_value()) as conn:
            conn.execute(SET_TENANT, (a,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table"):
                conn.execute(sneaks[hypertable].format(c=chunk), (T0, b))


def test_upserts_into_compressed_chunks_keep_working(tsdb: Tsdb) -> None:
    s, a, b = tsdb.settings, tsdb.a, tsdb.b
    old = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=5)
    write_bars(s, [*minute_bars(a, "CMP", old, 3, 10.0), bar_row(b, "CMP", old, 90.0)])
    with psycopg.connect(owner_url(s), autocommit=True) as conn:
        compressed = conn.execute(
            "SELECT count(compress_chunk(c, if_not_compressed => true)) "
            "FROM show_chunks('bars_minute', older_than => interval '1 day') c"
        ).fetchone()
        assert compressed is not None and compressed[0] >= 1
        status = conn.execute(
            "SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'bars_minute' "
            "AND range_start <= %s AND range_end > %s",
            (old, old),
        ).fetchone()
        assert status == (True,)
    # The sink's corrections of old data: a higher revision, a replay, a stale revision, a new minute.
    write_bars(
        s,
        [
            bar_row(a, "CMP", old, 15.0, revision=1),
            bar_row(a, "CMP", old + MINUTE, 11.0),
            bar_row(a, "CMP", old + 2 * MINUTE, 99.0, revision=-1),
            bar_row(a, "CMP", old + 3 * MINUTE, 13.0),
            bar_row(b, "CMP", old, 91.0, revision=1),
        ],
    )
    got = query.bars(reader_url(s), a, symbol="CMP", timeframe="1m", start=old, end=old + timedelta(hours=1))
    assert [(r[0], r[7], r[11]) for r in got.rows] == [
        (old, 15.0, 1),
        (old + MINUTE, 11.0, 0),
        (old + 2 * MINUTE, 12.0, 0),
        (old + 3 * MINUTE, 13.0, 0),
    ]
    got_b = query.bars(reader_url(s), b, symbol="CMP", timeframe="1m", start=old, end=old + timedelta(hours=1))
    assert [(r[0], r[7], r[11]) for r in got_b.rows] == [(old, 91.0, 1)]
    # Another tenant's row into the compressed range is refused like anywhere else.
    with psycopg.connect(s.database.url.get_secret_value()) as conn:
        conn.execute(SET_TENANT, (a,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO tenant_view.bars_minute (ts, tenant_id, vendor, symbol, timeframe, open, high, low, "
                "close, volume) VALUES (%s, %s, 'polygon', 'CMP', '1m', 1, 1, 1, 1, 1) ON CONFLICT DO NOTHING",
                (old, b),
            )


def _aggregates_of(s: Settings, tenant: str | None, symbol: str) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(reader_url(s)) as conn:
        for name in EXPECTED_AGGREGATES:
            with conn.transaction():
                if tenant is not None:
                    conn.execute(SET_TENANT, (tenant,))
                out[name] = conn.execute(AGGREGATE_QUERY.format(name=name), (symbol,)).fetchall()
    return out


def test_continuous_aggregates_refresh_and_isolate_tenants(tsdb: Tsdb) -> None:
    s, a, b = tsdb.settings, tsdb.a, tsdb.b
    write_bars(s, [*minute_bars(a, "AGG", T0, 10, 100.0), *minute_bars(b, "AGG", T0, 3, 500.0)])
    window = ["--from", "2026-11-20", "--to", "2026-11-22"]
    refreshed = cli(s, "admin", "aggregates", "refresh", *window)
    assert refreshed.exit_code == 0, refreshed.output
    span = "[2026-11-20T00:00:00+00:00, 2026-11-22T00:00:00+00:00)"
    assert refreshed.stdout.splitlines() == [f"{n}: refreshed {span}" for n in ("bars_5m", "bars_1h", "bars_1d")]
    assert _aggregates_of(s, a, "AGG") == EXPECTED_AGGREGATES  # the same numbers as the plain views
    assert _aggregates_of(s, None, "AGG") == {n: [] for n in EXPECTED_AGGREGATES}
    assert [r[1] for r in _aggregates_of(s, b, "AGG")["bars_1h"]] == [500.0]
    with psycopg.connect(reader_url(s)) as conn:
        for name in EXPECTED_AGGREGATES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(f"SELECT count(*) FROM public.{name}")
            conn.rollback()
    # A correction to compressed raw data reaches the aggregates at the next refresh.
    with psycopg.connect(owner_url(s), autocommit=True) as conn:
        conn.execute(
            "SELECT compress_chunk(format('%I.%I', chunk_schema, chunk_name)) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'bars_minute' AND NOT is_compressed"
        )
    write_bars(s, [bar_row(a, "AGG", T0 + 4 * MINUTE, 200.0, revision=1)])
    assert cli(s, "admin", "aggregates", "refresh", *window, "--aggregate", "bars_5m").exit_code == 0
    assert _aggregates_of(s, a, "AGG")["bars_5m"][0] == (T0, 100.0, 201.0, 99.0, 200.0, 500.0, 121.2, 25, 5)


def test_retention_apply_drops_whole_chunks_past_keep(tsdb: Tsdb) -> None:
    s, a = tsdb.settings, tsdb.a
    ancient = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=200)
    recent = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    write_bars(s, [bar_row(a, "RET", ancient, 1.0), bar_row(a, "RET", recent, 2.0)])
    done = cli(s, "admin", "retention", "apply")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"bars_minute: dropped 1 chunks older than \S+ \S+ \(keep 6 months\)", lines[0]), lines
    assert [re.sub(r"older than \S+ \S+ ", "", line) for line in lines[1:]] == [
        "bars_hour: dropped 0 chunks (keep 2 years)",
        "bars_day: dropped 0 chunks (keep 10 years)",
        "quotes: dropped 0 chunks (keep 14 days)",
        "kept forever (no keep setting): fundamentals, news, option_snapshots",
    ]
    got = query.bars(reader_url(s), a, symbol="RET", timeframe="1m", start=ancient, end=recent + MINUTE)
    assert [(r[0], r[7]) for r in got.rows] == [(recent, 2.0)]


def test_migrations_go_up_and_down_and_refuse_to_strip_guarded_tables(
    superuser_url: str, timescale_base: Settings
) -> None:
    with throwaway_database(superuser_url, timescaledb=True) as name:
        s = database_settings(timescale_base, name)
        migrate.upgrade(s, "0001")
        migrate.upgrade(s)
        migrate.downgrade(s, "0001")
        with psycopg.connect(owner_url(s)) as conn:
            after = conn.execute(
                "SELECT count(*) FILTER (WHERE has_table_privilege('mds_reader', c.oid, 'SELECT')), "
                "count(*) FILTER (WHERE EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid "
                "AND t.tgname LIKE 'tenant_guard%%')) FROM pg_class c "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname <> 'alembic_version'"
            ).fetchone()
        assert after == (11, 0)  # 0001's grants back, no trigger left (sink_offsets and tenants included)
        migrate.upgrade(s)
        assert cli(s, "admin", "policies", "apply").exit_code == 0
        with pytest.raises(RuntimeError, match=re.escape("bars_day, bars_hour, bars_minute in guard isolation")):
            migrate.downgrade(s, "0001")
        # Each revision commits on its own: the ones above 0002 went down, 0002 refused and kept its pieces.
        assert migrate.current_revision(s) == "0002"
