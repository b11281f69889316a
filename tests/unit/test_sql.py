from __future__ import annotations

from mds_sink.sql import flush_sql
from mds_sink.tables import BARS, JOBS, NEWS, QUOTES, TABLES, TENANT_TABLES


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
