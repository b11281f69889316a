from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from mds_sink.core.catalog import TABLES, TENANT_TABLES
from mds_sink.core.tables import BAR_PRECEDENCE, BARS, JOBS, NEWS, QUOTE_PRECEDENCE, QUOTES
from mds_sink.core.validate import TIMEFRAMES
from mds_sink.db.sql import flush_sql

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations" / "versions"


def test_bars_are_routed_by_timeframe_class_in_one_statement() -> None:
    sql = flush_sql(BARS)
    assert sql.copy.startswith("COPY mds_stage_bars (ts, tenant_id, vendor, symbol, timeframe,")
    for table in ("bars_minute", "bars_hour", "bars_day"):
        assert f"INSERT INTO tenant_view.{table} AS t" in sql.upsert
    assert "s.timeframe IN ('1m', '5m', '15m', '30m')" in sql.upsert
    assert sql.upsert.count("%(tenant)s") == 3
    assert "INSERT INTO tenant_view.latest_prices" in sql.upsert


def test_upserts_never_go_back_a_revision_and_skip_identical_rows() -> None:
    sql = flush_sql(QUOTES).upsert
    assert "WHERE EXCLUDED.revision > t.revision OR (EXCLUDED.revision = t.revision AND (" in sql
    assert "IS DISTINCT FROM" in sql
    # The latest price only moves forward: in time, then at an equal ts in precedence.
    assert "WHERE (EXCLUDED.ts, EXCLUDED.precedence) > (lp.ts, lp.precedence) OR (" in sql


def test_outbox_inserts_once_and_news_updates_when_changed() -> None:
    assert flush_sql(JOBS).upsert.endswith("ON CONFLICT (tenant_id, idempotency_key) DO NOTHING")
    news = flush_sql(NEWS).upsert
    assert "ON CONFLICT (published_at, tenant_id, news_id) DO UPDATE" in news
    assert "revision" not in news


def test_staged_values_are_converted_in_sql() -> None:
    upsert = flush_sql(BARS).upsert
    assert "timestamptz 'epoch' + s.ts * interval '1 microsecond'" in upsert
    assert "s.tenant_id::uuid" in upsert
    assert "ts bigint, tenant_id text" in flush_sql(BARS).create_stage


def test_every_physical_table_is_a_tenant_table() -> None:
    physical = {t.table for s in TABLES.values() for t in s.physical}
    assert set(TENANT_TABLES) == physical | {"latest_prices", "bar_gaps"}


def test_a_tenant_is_upserted_into_just_the_tables_its_rows_go_to() -> None:
    sql = flush_sql(BARS)
    assert sorted(sql.upserts) == [(0,), (0, 1), (0, 1, 2), (0, 2), (1,), (1, 2), (2,)]
    hour_only = sql.upserts[(1,)]
    assert "INSERT INTO tenant_view.bars_hour AS t" in hour_only
    assert "bars_minute" not in hour_only and "bars_day" not in hour_only
    assert "INSERT INTO tenant_view.latest_prices" in hour_only  # latest prices move whichever table was written
    assert sql.upsert == sql.upserts[(0, 1, 2)]
    assert list(flush_sql(QUOTES).upserts) == [(0,)]


def test_rows_are_routed_by_timeframe_class_per_tenant() -> None:
    a, b = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"

    def bar(tenant: str, timeframe: str) -> tuple[object, ...]:
        return (0, tenant, "v", "S", timeframe, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 0)

    rows = [bar(a, "1m"), bar(a, "1d"), bar(b, "4h"), bar(a, "5m"), bar(b, "1h")]
    assert BARS.tenant_targets(rows) == {a: (0, 2), b: (1,)}
    assert QUOTES.tenant_targets([(0, a), (0, b), (0, a)]) == {a: (0,), b: (0,)}


def test_every_timeframe_validation_admits_has_a_table() -> None:
    assert {v for t in BARS.physical for v in t.values} == TIMEFRAMES
    with pytest.raises(ValueError, match="no table takes timeframe '2m'"):
        BARS.tenant_targets([(0, "t", "v", "S", "2m", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 0)])


def minutes(timeframe: str) -> int:
    return int(timeframe[:-1]) * {"m": 1, "h": 60, "d": 1440, "w": 10080}[timeframe[-1]]


def test_at_an_equal_ts_a_quote_outranks_every_bar_and_a_finer_bar_a_coarser_one() -> None:
    assert set(BAR_PRECEDENCE) == TIMEFRAMES
    by_length = sorted(BAR_PRECEDENCE, key=minutes)
    assert [BAR_PRECEDENCE[tf] for tf in by_length] == sorted(BAR_PRECEDENCE.values(), reverse=True)
    assert len(set(BAR_PRECEDENCE.values())) == len(BAR_PRECEDENCE)
    assert max(BAR_PRECEDENCE.values()) < QUOTE_PRECEDENCE


def test_the_latest_price_statement_ranks_rows_by_ts_then_precedence_in_the_batch_and_against_the_stored_row() -> None:
    for upsert in flush_sql(BARS).upserts.values():
        # Every bar target returns the rank of its timeframe, a CASE (no function call per row).
        whens = " ".join(f"WHEN '{tf}' THEN {rank}" for tf, rank in BAR_PRECEDENCE.items())
        targets = upsert.count("INSERT INTO tenant_view.bars_")
        assert upsert.count(f"CASE timeframe {whens} END AS precedence") == targets
        assert "ORDER BY tenant_id, vendor, symbol, ts DESC, precedence DESC ON CONFLICT" in upsert
        assert "precedence = EXCLUDED.precedence" in upsert
    quotes = flush_sql(QUOTES).upsert
    assert f", {QUOTE_PRECEDENCE} AS precedence" in quotes
    assert re.search(r"\(lp\.ts, lp\.precedence\) AND \(EXCLUDED\.price, .*\) IS DISTINCT FROM", quotes)


def load_migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, MIGRATIONS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0005_ranks_stored_prices_as_the_sink_does() -> None:
    migration = load_migration("0005_latest_price_precedence")
    assert migration.BAR_PRECEDENCE == BAR_PRECEDENCE
    assert migration.QUOTE_PRECEDENCE == QUOTE_PRECEDENCE


def test_a_kept_crossed_quote_never_feeds_the_latest_price() -> None:
    assert "FROM (SELECT * FROM w0) written WHERE bid < ask ORDER BY" in flush_sql(QUOTES).upsert
    assert "WHERE bid < ask" not in flush_sql(BARS).upsert


def test_only_the_outbox_checks_for_a_key_stored_with_another_job() -> None:
    conflicts = flush_sql(JOBS).conflicts
    assert conflicts is not None
    assert "JOIN tenant_view.jobs t ON t.tenant_id = s.tenant_id::uuid AND t.idempotency_key = s.idempotency_key" in (
        conflicts
    )
    assert conflicts.endswith(
        "(t.job_type, t.payload, t.priority) IS DISTINCT FROM (s.job_type, s.payload::jsonb, s.priority)"
    )
    assert flush_sql(BARS).conflicts is None
