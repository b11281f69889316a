"""The plan of `admin policies apply`, from catalog states built by hand (no server)."""

from __future__ import annotations

from dataclasses import replace

from mds_sink.config.policy_settings import PolicySettings
from mds_sink.control.isolation import Isolation
from mds_sink.control.policies import (
    AggregateState,
    DatabaseState,
    RefreshState,
    TableState,
    compression_layout,
    plan,
)
from mds_sink.core.intervals import parse_interval

HYPERTABLES = ("bars_minute", "bars_hour", "bars_day", "quotes", "fundamentals", "news", "option_snapshots")
CHUNKS = {
    "bars_minute": "1 day",
    "bars_hour": "7 days",
    "bars_day": "30 days",
    "quotes": "1 day",
    "fundamentals": "365 days",
    "news": "30 days",
    "option_snapshots": "1 day",
}
AFTER_0002 = Isolation(rls=True, guard=True, reader_on_table=False)  # a hypertable after migration 0002


def fresh_timescaledb() -> DatabaseState:
    tables = {
        t: TableState(t, AFTER_0002, hypertable=True, chunk_interval=parse_interval(CHUNKS[t])) for t in HYPERTABLES
    }
    for t in ("jobs", "latest_prices"):
        tables[t] = TableState(t, Isolation(rls=True, guard=False, reader_on_table=True))
    return DatabaseState("2.28.3", tables, {})


def applied(state: DatabaseState) -> DatabaseState:
    """What the catalogs say once the default plan has run."""
    settings = PolicySettings()
    tables = dict(state.tables)
    for name, want in settings.tables().items():
        current = tables[name]
        compressed = want.compress_after is not None
        segment, order = compression_layout(name) if compressed else ((), ())
        guard = compressed or name == "bars_minute"
        tables[name] = replace(
            current,
            isolation=Isolation(rls=not guard, guard=True, reader_on_table=False),
            compression=compressed,
            segmentby=segment,
            orderby=order,
            compress_after=want.compress_after,
            keep=want.keep,
        )
    aggregates = {
        name: AggregateState(name, "continuous", True, RefreshState(r.start_offset, r.end_offset, r.schedule_interval))
        for name, r in settings.aggregates.refresh().items()
    }
    return DatabaseState(state.timescaledb, tables, aggregates)


def test_compression_segments_by_tenant_and_symbol_and_orders_by_time_then_the_key() -> None:
    assert compression_layout("bars_minute") == (("tenant_id", "symbol"), ("ts DESC", "vendor", "timeframe"))
    assert compression_layout("quotes") == (("tenant_id", "symbol"), ("ts DESC", "vendor"))
    assert compression_layout("fundamentals") == (("tenant_id", "symbol"), ("as_of DESC", "vendor", "period"))
    assert compression_layout("option_snapshots") == (
        ("tenant_id", "underlying"),
        ("ts DESC", "vendor", "expiry", "option_type", "strike"),
    )


def test_the_switch_to_guard_shares_the_transaction_that_enables_compression() -> None:
    p = plan(fresh_timescaledb(), PolicySettings(), reader="mds_reader")
    first = p.transactions[0]
    assert [c.target for c in first.changes][:4] == ["bars_minute"] * 4
    switch, compress = first.changes[0], first.changes[1]
    assert switch.what.startswith("isolation rls -> guard in this transaction: TimescaleDB refuses compression")
    assert switch.sql == ("ALTER TABLE public.bars_minute NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY",)
    assert compress.sql == (
        "ALTER TABLE public.bars_minute SET (timescaledb.compress, timescaledb.compress_segmentby = "
        "'tenant_id, symbol', timescaledb.compress_orderby = 'ts DESC, vendor, timeframe')",
    )
    # The aggregates over bars_minute come after the switch, in the same transaction.
    assert [c.target for c in first.changes[4:]] == ["bars_5m", "bars_5m", "bars_1h", "bars_1h", "bars_1d", "bars_1d"]
    assert [[c.target for c in t.changes] for t in p.transactions[1:]] == [
        ["bars_hour"] * 4,
        ["bars_day"] * 4,
        ["quotes"],
    ]
    assert p.notes == ()


def test_a_second_apply_plans_nothing() -> None:
    again = plan(applied(fresh_timescaledb()), PolicySettings(), reader="mds_reader")
    assert (again.transactions, again.notes) == ((), ())


def test_changed_settings_plan_only_the_difference() -> None:
    settings = PolicySettings.model_validate(
        {
            "bars_minute": {"keep": "3 months", "chunk_interval": "12 hours"},
            "quotes": {"keep": "never"},
            "aggregates": {"bars_1d": {"schedule_interval": "2 hours"}},
        }
    )
    p = plan(applied(fresh_timescaledb()), settings, reader="mds_reader")
    assert [(c.target, c.what) for c in p.changes] == [
        ("bars_minute", "chunk interval 1 day -> 12 hours (applies to new chunks)"),
        ("bars_minute", "retention policy: drop chunks older than 3 months (was 6 months)"),
        ("bars_1d", "refresh policy: every 2 hours, window [now - 30 days, now - 1 day)"),
        ("quotes", "retention policy removed (was 14 days)"),
    ]
    assert p.changes[-1].sql == ("SELECT remove_retention_policy('public.quotes', if_exists => true)",)


def test_compression_off_in_the_settings_removes_the_policy_but_keeps_guard() -> None:
    settings = PolicySettings.model_validate({"bars_day": {"compress_after": "never"}})
    p = plan(applied(fresh_timescaledb()), settings, reader="mds_reader")
    assert [(c.target, c.what) for c in p.changes] == [
        ("bars_day", "compression policy removed (was 30 days); compressed chunks stay compressed"),
    ]


def test_plain_postgresql_gets_views_and_says_what_it_does_instead() -> None:
    tables = {t: TableState(t, Isolation(rls=True, guard=False, reader_on_table=True)) for t in (*HYPERTABLES, "jobs")}
    p = plan(DatabaseState(None, tables, {}), PolicySettings(), reader="mds_reader")
    assert [(c.target, c.what) for c in p.changes] == [
        (n, f"plain view created ({b} buckets of 1m bars, computed when read: nothing to refresh)")
        for n, b in (("bars_5m", "5 minutes"), ("bars_1h", "1 hour"), ("bars_1d", "1 day"))
    ]
    assert p.changes[0].sql[0].startswith("CREATE VIEW public.bars_5m WITH (security_invoker = true) AS SELECT ")
    assert "date_bin(interval '5 minutes', ts, timestamptz '2000-01-03 00:00:00+00')" in p.changes[0].sql[0]
    assert p.notes[0].startswith("TimescaleDB is not installed in this database")
    existing = {n: AggregateState(n, "view", True) for n in ("bars_5m", "bars_1h", "bars_1d")}
    assert plan(DatabaseState(None, tables, existing), PolicySettings(), reader="r").changes == []


def test_aggregates_disabled_are_neither_created_nor_dropped() -> None:
    settings = PolicySettings.model_validate({"aggregates": {"enabled": False}})
    fresh = plan(fresh_timescaledb(), settings, reader="mds_reader")
    assert [c for c in fresh.changes if c.target in {"bars_5m", "bars_1h", "bars_1d"}] == []
    assert fresh.changes[0].what.startswith("isolation rls -> guard")  # compression still needs it
    done = plan(applied(fresh_timescaledb()), settings, reader="mds_reader")
    assert done.changes == []
    assert done.notes == ("aggregates.enabled is false; bars_1d, bars_1h, bars_5m exist and are left alone",)


def test_a_table_created_before_timescaledb_is_left_alone_and_said_so() -> None:
    state = fresh_timescaledb()
    tables = dict(state.tables)
    tables["news"] = TableState("news", Isolation(rls=True, guard=False, reader_on_table=True))
    p = plan(applied(DatabaseState(state.timescaledb, tables, {})), PolicySettings(), reader="mds_reader")
    assert p.notes == ("news: not a hypertable (created before TimescaleDB was installed?); left alone",)
