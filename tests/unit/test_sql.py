from __future__ import annotations

import pytest

from mds_sink.sql import flush_sql
from mds_sink.tables import BARS, JOBS, NEWS, QUOTES, TABLES, TENANT_TABLES
from mds_sink.validate import TIMEFRAMES


def test_bars_are_routed_by_timeframe_class_in_one_statement() -> None:
    sql = flush_sql(BARS)
    assert sql.copy.startswith("COPY mds_stage_bars (ts, tenant_id, vendor, symbol, timeframe,")
    for table in ("bars_minute", "bars_hour", "bars_day"):
        assert f"INSERT INTO {table} AS t" in sql.upsert
    assert "s.timeframe IN ('1m', '5m', '15m', '30m')" in sql.upsert
    assert sql.upsert.count("%(tenant)s") == 3
    assert "INSERT INTO latest_prices" in sql.upsert


def test_upserts_never_go_back_a_revision_and_skip_identical_rows() -> None:
    sql = flush_sql(QUOTES).upsert
    assert "WHERE EXCLUDED.revision > t.revision OR (EXCLUDED.revision = t.revision AND (" in sql
    assert "IS DISTINCT FROM" in sql
    assert "WHERE EXCLUDED.ts > lp.ts OR (EXCLUDED.ts = lp.ts AND" in sql  # latest price only moves forward


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
    assert set(TENANT_TABLES) == {t.table for s in TABLES.values() for t in s.physical} | {"latest_prices"}


def test_a_tenant_is_upserted_into_just_the_tables_its_rows_go_to() -> None:
    sql = flush_sql(BARS)
    assert sorted(sql.upserts) == [(0,), (0, 1), (0, 1, 2), (0, 2), (1,), (1, 2), (2,)]
    hour_only = sql.upserts[(1,)]
    assert "INSERT INTO bars_hour AS t" in hour_only
    assert "bars_minute" not in hour_only and "bars_day" not in hour_only
    assert "INSERT INTO latest_prices" in hour_only  # latest prices move whichever table was written
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
