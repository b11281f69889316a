"""Bar continuity end to end: a real broker, a real database, the gaps and jobs a user would query."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from mds_sink.control.offsets import reset_group
from mds_sink.db import gaps as sql
from mds_sink.db.sql import SET_TENANT
from mds_sink.db.writer import database_pool
from mds_sink.metrics import REGISTRY
from mds_sink.sink.continuity import Continuity
from tests.control import cli
from tests.support import Scenario, bar, drained, iso_ts, make_scenario, running_sink, wait_until

GAPS = (
    "SELECT symbol, timeframe, gap_from, gap_to, missing_bars, remaining_bars, calendar, closed_at IS NOT NULL, "
    "backfill_key FROM tenant_view.bar_gaps ORDER BY symbol, timeframe, gap_from"
)
JOBS = "SELECT idempotency_key, job_type, payload, priority, status FROM tenant_view.jobs ORDER BY idempotency_key"

# 2025-11-20 (a Thursday) 15:00 UTC is 10:00 in New York: the session runs 14:30-21:00 UTC.
HOLES_1M = {5, 6, 7, 20}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def day_bar(tenant: str, symbol: str, day: str) -> dict[str, Any]:
    return dict(bar(tenant, symbol, 0, timeframe="1d"), ts=iso_ts(at(f"{day}T00:00").timestamp()))


def stream(tenant: str) -> list[dict[str, Any]]:
    """AAPL minute bars with two holes, MSFT without any, SPY across a weekend, AAPL days missing one."""
    bars = [bar(tenant, "AAPL", m) for m in range(40) if m not in HOLES_1M]
    bars += [bar(tenant, "MSFT", m) for m in range(40)]
    friday_close, monday_open = at("2025-11-21T20:59").timestamp(), at("2025-11-24T14:30").timestamp()
    bars += [dict(bar(tenant, "SPY", 0), ts=iso_ts(friday_close)), dict(bar(tenant, "SPY", 0), ts=iso_ts(monday_open))]
    bars += [day_bar(tenant, "AAPL", d) for d in ("2025-11-17", "2025-11-18", "2025-11-20")]
    return bars


EXPECTED = [
    ("AAPL", "1d", at("2025-11-19T00:00"), at("2025-11-20T00:00"), 1),
    ("AAPL", "1m", at("2025-11-20T15:05"), at("2025-11-20T15:08"), 3),
    ("AAPL", "1m", at("2025-11-20T15:20"), at("2025-11-20T15:21"), 1),
]


def gaps(scenario: Scenario, tenant: str) -> list[tuple[Any, ...]]:
    return scenario.rows(tenant, GAPS)


def key(symbol: str, timeframe: str, start: datetime, end: datetime) -> str:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return f"bar-gap/polygon/{symbol}/{timeframe}/{start.strftime(fmt)}/{end.strftime(fmt)}"


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_holes_become_gaps_one_backfill_each_across_a_restart_and_a_replay_and_late_bars_close_them() -> None:
    scenario = make_scenario(
        partitions=2, tables=["bars"], continuity={"grace_s": 0, "check_every_s": 0.2, "job_priority": 5}
    )
    tenant = scenario.add_tenant("gaps")
    scenario.produce("bars", stream(tenant))
    ends = scenario.end_offsets()
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="the stream committed")
        wait_until(lambda: all(g[8] is not None for g in gaps(scenario, tenant)), what="backfills requested")
        # The metrics say what the table says.
        wait_until(
            lambda: (
                gauge("mds_sink_bar_gaps_open", tenant=tenant, timeframe="1m") == 2
                and gauge("mds_sink_bar_gaps_open", tenant=tenant, timeframe="1d") == 1
                and gauge("mds_sink_bar_gap_missing_minutes", tenant=tenant, timeframe="1m") == 4
                and gauge("mds_sink_bar_gap_missing_minutes", tenant=tenant, timeframe="1d") == 1440
            ),
            what="the gap gauges",
        )

    expected_keys = [key(*e[:4]) for e in EXPECTED]
    first = gaps(scenario, tenant)
    assert [g[:5] for g in first] == EXPECTED
    assert [(g[5], g[6], g[7], g[8]) for g in first] == [
        (e[4], "XNYS", False, k) for e, k in zip(EXPECTED, expected_keys, strict=True)
    ]
    jobs = scenario.rows(tenant, JOBS)
    assert [(j[0], j[1], j[3], j[4]) for j in jobs] == [
        (k, "backfill_bars", 5, "pending") for k in sorted(expected_keys)
    ]
    payload = {j[0]: j[2] for j in jobs}[expected_keys[1]]
    assert payload == {
        "kind": "bars",
        "vendor": "polygon",
        "symbol": "AAPL",
        "timeframe": "1m",
        "start": "2025-11-20T15:05:00Z",
        "end": "2025-11-20T15:08:00Z",
        "missing_bars": 3,
        "calendar": "XNYS",
    }

    # A new process (nothing in memory) replays the whole topic: the same gaps, no second job.
    assert reset_group(scenario.settings) == 2
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="the replay committed")
        wait_until(lambda: gauge("mds_sink_bar_gaps_open", tenant=tenant, timeframe="1m") == 2, what="gaps known again")
        assert gaps(scenario, tenant) == first
        assert scenario.rows(tenant, JOBS) == jobs

        # The backfill lands (late bars): the gaps close, in the flush that writes them.
        scenario.produce("bars", [bar(tenant, "AAPL", m) for m in sorted(HOLES_1M)])
        scenario.produce("bars", [day_bar(tenant, "AAPL", "2025-11-19")])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="the late bars committed")
        closed = gaps(scenario, tenant)
        assert [(g[:5], g[5], g[7]) for g in closed] == [(e, 0, True) for e in EXPECTED]
        wait_until(
            lambda: (
                gauge("mds_sink_bar_gaps_open", tenant=tenant, timeframe="1m") is None
                and gauge("mds_sink_bar_gaps_open", tenant=tenant, timeframe="1d") is None
            ),
            what="the open-gap gauges gone with the gaps",
        )
    assert scenario.rows(tenant, JOBS) == jobs  # closing asks for nothing more

    # What an operator sees: no open gap, and with --all their history.
    shown = cli(scenario.settings, "query", "gaps", "--tenant", tenant, "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == []
    shown = cli(scenario.settings, "query", "gaps", "--tenant", tenant, "--all", "--timeframe", "1m", "--json")
    assert shown.exit_code == 0, shown.output
    history = json.loads(shown.output)
    assert [(g["symbol"], g["gap_from"], g["gap_to"], g["missing_bars"], g["remaining_bars"]) for g in history] == [
        ("AAPL", "2025-11-20T15:05:00+00:00", "2025-11-20T15:08:00+00:00", 3, 0),
        ("AAPL", "2025-11-20T15:20:00+00:00", "2025-11-20T15:21:00+00:00", 1, 0),
    ]
    assert all(g["closed_at"] and g["backfill_key"] for g in history)


def test_a_partly_filled_gap_stays_open_with_what_is_still_missing() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"], continuity={"check_every_s": 0.2})
    tenant = scenario.add_tenant("partial")
    with running_sink(scenario.settings) as worker:
        scenario.produce("bars", [bar(tenant, "NVDA", m) for m in (0, 1, 6)])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="the hole committed")
        assert [g[:6] for g in gaps(scenario, tenant)] == [
            ("NVDA", "1m", at("2025-11-20T15:02"), at("2025-11-20T15:06"), 4, 4)
        ]
        scenario.produce("bars", [bar(tenant, "NVDA", m) for m in (3, 4)])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="two late bars committed")
        assert [g[:8] for g in gaps(scenario, tenant)] == [
            ("NVDA", "1m", at("2025-11-20T15:02"), at("2025-11-20T15:06"), 4, 2, "XNYS", False)
        ]
    assert scenario.rows(tenant, JOBS) == []  # within the grace period (15 minutes by default)


def test_two_members_asking_at_once_make_one_job() -> None:
    """Members that both know a gap (one that lost its partitions and has not noticed, say) ask for its
    backfill at the same moment: the gap row's lock lets one ask, the other finds it asked."""
    scenario = make_scenario(partitions=1, tables=["bars"], continuity={"check_every_s": 3600})
    tenant = scenario.add_tenant("race")
    with running_sink(scenario.settings) as worker:
        scenario.produce("bars", [bar(tenant, "AMD", m) for m in (0, 4)])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="the hole committed")
    assert [g[:5] for g in gaps(scenario, tenant)] == [("AMD", "1m", at("2025-11-20T15:01"), at("2025-11-20T15:04"), 3)]
    members = []
    for n in range(2):
        pool = database_pool(scenario.settings.database, min_size=1, max_size=1, name=f"race-{n}")
        pool.open(wait=True)
        member = Continuity(scenario.settings.continuity, pool)
        member.prepare([row_of(bar(tenant, "AMD", 5))])  # learns the series and its open gap
        members.append((member, pool))
    try:
        start = threading.Barrier(2)
        asked: list[int] = []

        def ask(member: Continuity) -> None:
            start.wait()
            asked.append(member.tick(now=time.time() + 3600))  # long past the grace period

        threads = [threading.Thread(target=ask, args=(m,)) for m, _ in members]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(asked) == [0, 1]
        assert [j[0] for j in scenario.rows(tenant, JOBS)] == [
            key("AMD", "1m", at("2025-11-20T15:01"), at("2025-11-20T15:04"))
        ]
        for member, _ in members:  # neither asks again
            assert member.tick(now=time.time() + 7200) == 0
    finally:
        for _, pool in members:
            pool.close()
    assert len(scenario.rows(tenant, JOBS)) == 1


def row_of(record: dict[str, Any]) -> tuple[Any, ...]:
    """A bar record as the sink stages it (core/tables.py BARS): ts in µs first, then the series."""
    ts_us = int(datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp() * 1_000_000)
    return (ts_us, record["tenant_id"], record["vendor"], record["symbol"], record["timeframe"])


def test_a_new_series_is_looked_up_with_one_bar_read_whatever_its_history() -> None:
    """At start and after a rebalance each series is looked up: its newest bar before the batch. That
    must be one index probe, not a read of the series' whole history (months of minute bars)."""
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("history")
    history = {"AAPL": 3000, "MSFT": 1500}
    with psycopg.connect(scenario.owner_url) as conn, conn.transaction():
        conn.execute(SET_TENANT, (tenant,))
        for symbol, count in history.items():
            conn.execute(
                "INSERT INTO bars_minute (ts, tenant_id, vendor, symbol, timeframe, open, high, low, close, volume, "
                "revision) SELECT timestamptz '2025-11-01 00:00Z' + n * interval '1 minute', %s, 'polygon', %s, '1m', "
                "1, 1, 1, 1, 1, 0 FROM generate_series(0, %s - 1) n",
                (tenant, symbol, count),
            )
    first, minute = int(at("2025-11-01T00:00").timestamp()) * 1_000_000, 60_000_000
    # A restart: the batch goes on 1 and 3 bars after the newest stored ones; NVDA has none.
    back = {"AAPL": 1, "MSFT": 3, "NVDA": 1}
    newest = {s: first + (n - 1) * minute for s, n in history.items()}
    asked = {(tenant, "polygon", s, "1m"): newest.get(s, first) + d * minute for s, d in back.items()}
    with psycopg.connect(scenario.writer_url) as conn, conn.transaction():
        conn.execute(SET_TENANT, (tenant,))
        found = sql.read_lookup(
            tenant, asked, [conn.execute(s, p).fetchall() for s, p in sql.lookup_statements(tenant, asked)]
        )
        stats = conn.execute(
            "SELECT coalesce(sum(coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)), 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = 'bars_minute'"
        ).fetchone()
    assert found.last == {
        (tenant, "polygon", "AAPL", "1m"): newest["AAPL"],
        (tenant, "polygon", "MSFT", "1m"): newest["MSFT"],
        (tenant, "polygon", "NVDA", "1m"): None,
    }
    # Held under the very key objects asked (those of the batch's rows): the tracker's per-row lookups
    # then compare the series' strings by identity (core/validate.py gives a series' rows one object each).
    assert {id(k) for k in found.last} == {id(k) for k in asked}
    # Bars near the batch, at most LOOKUP_GROWTH per bar back; never the 4,500 of their history.
    bound = sql.LOOKUP_GROWTH * (back["AAPL"] + back["MSFT"])
    assert stats is not None
    assert stats[0] <= bound, f"{stats[0]} bars read to look up {len(asked)} series"


def test_series_looked_up_ahead_spare_the_flush_its_lookup_unless_a_rebalance_came_between() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("ahead")
    with running_sink(scenario.settings) as worker:
        scenario.produce("bars", [bar(tenant, s, m) for s in ("AAPL", "MSFT") for m in (0, 1)])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="the first bars committed")

    def lookups() -> float:
        return gauge("mds_sink_flush_duration_seconds_count", stage="gap_lookup") or 0.0

    pool = database_pool(scenario.settings.database, min_size=1, max_size=2, name="ahead")
    pool.open(wait=True)
    expected = [("AAPL", at("2025-11-20T15:02"), at("2025-11-20T15:05"), 3)]
    try:
        member = Continuity(scenario.settings.continuity, pool)
        batch = [row_of(bar(tenant, "AAPL", 5)), row_of(bar(tenant, "MSFT", 2))]
        before = lookups()
        member.look_ahead(batch)
        assert lookups() == before + 1
        assert spans_of(member.prepare(batch).plan) == expected
        assert lookups() == before + 1  # nothing asked in the flush

        # A rebalance: the series start over, and are looked up again (here, in the flush).
        member.forget()
        assert spans_of(member.prepare(batch).plan) == expected
        assert lookups() == before + 2
    finally:
        pool.close()


def spans_of(plan: Any) -> list[tuple[str, datetime, datetime, int]]:
    return [
        (
            g.series[2],
            datetime.fromtimestamp(g.gap_from_us / 1e6, UTC),
            datetime.fromtimestamp(g.gap_to_us / 1e6, UTC),
            g.missing,
        )
        for g in plan.candidates
    ]
