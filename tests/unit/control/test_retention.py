from __future__ import annotations

from datetime import UTC, datetime

from mds_sink.config.policy_settings import PolicySettings
from mds_sink.control.retention import RetentionResult, RetentionTask, delete_batch_sql, retention_tasks
from mds_sink.core.intervals import parse_interval


def test_tables_with_a_keep_are_dropped_by_chunk_on_timescaledb_and_deleted_otherwise() -> None:
    settings = PolicySettings.model_validate({"news": {"keep": "1 year"}})
    on_timescale = retention_tasks(settings, {"bars_minute", "bars_hour", "bars_day", "quotes"})
    assert [(t.table, t.time_column, str(t.keep), t.method) for t in on_timescale] == [
        ("bars_minute", "ts", "6 months", "drop_chunks"),
        ("bars_hour", "ts", "2 years", "drop_chunks"),
        ("bars_day", "ts", "10 years", "drop_chunks"),
        ("quotes", "ts", "14 days", "drop_chunks"),
        ("news", "published_at", "1 year", "delete"),  # not a hypertable there
    ]
    plain = retention_tasks(settings, None)
    assert {t.method for t in plain} == {"delete"}


def test_a_batch_is_bounded_and_tenant_scoped() -> None:
    task = RetentionTask("quotes", "ts", parse_interval("14 days"), "delete")
    assert delete_batch_sql(task) == (
        "DELETE FROM public.quotes WHERE ctid = ANY(ARRAY(SELECT ctid FROM public.quotes "
        "WHERE tenant_id = %(tenant)s::uuid AND ts < %(cutoff)s LIMIT %(batch)s))"
    )


def test_results_say_what_was_removed() -> None:
    cutoff = datetime(2026, 5, 21, 10, 0, tzinfo=UTC)
    dropped = RetentionResult(RetentionTask("bars_minute", "ts", parse_interval("6 months"), "drop_chunks"), cutoff, 3)
    assert dropped.describe() == "bars_minute: dropped 3 chunks older than 2026-05-21 10:00:00+0000 (keep 6 months)"
    deleted = RetentionResult(RetentionTask("quotes", "ts", parse_interval("14 days"), "delete"), cutoff, 12, 4)
    assert deleted.describe() == (
        "quotes: deleted 12 rows older than 2026-05-21 10:00:00+0000 (keep 14 days) in 4 batches (plain PostgreSQL)"
    )
