"""Gap detection against real exchange calendars (exchange_calendars), no database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from mds_sink.config.continuity_settings import ContinuitySettings
from mds_sink.core.calendars import UnknownCalendar, sessions
from mds_sink.core.continuity import Counted, Gap, OpenGap, Series, Tracker, gap_key

T = "6f1d7a4e-2b1c-4f57-9a55-0d6c3e1b9a10"


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000


def row(when: str, symbol: str = "AAPL", timeframe: str = "1m", tenant: str = T) -> tuple[object, ...]:
    return (us(when), tenant, "polygon", symbol, timeframe, 1.0, 1.0, 1.0, 1.0, 1.0, None, None, 0)


def tracker(**settings: object) -> Tracker:
    s = ContinuitySettings.model_validate(settings)
    return Tracker(s.rules(), max_series=s.max_series)


def detect(t: Tracker, rows: Sequence[tuple[object, ...]], last: str | None = None) -> list[Gap]:
    """Plan a batch after the series' previous bar `last` (None: the series' first bar)."""
    plan = t.plan(rows)
    for key in plan.unknown:
        t.adopt(key, None if last is None else us(last), [])
    plan = t.resume(plan)
    t.apply(plan, [], [])
    return plan.candidates


def spans(gaps: list[Gap]) -> list[tuple[str, str, int]]:
    fmt = "%Y-%m-%d %H:%M"
    return [
        (
            datetime.fromtimestamp(g.gap_from_us / 1e6, UTC).strftime(fmt),
            datetime.fromtimestamp(g.gap_to_us / 1e6, UTC).strftime(fmt),
            g.missing,
        )
        for g in gaps
    ]


# -- the calendar --------------------------------------------------------------------------------
def test_a_hole_inside_a_session_is_its_missing_minutes() -> None:
    found = detect(tracker(), [row("2026-11-30T15:00"), row("2026-11-30T15:05")])
    assert spans(found) == [("2026-11-30 15:01", "2026-11-30 15:05", 4)]
    assert found[0].calendar == "XNYS"


def test_a_holiday_is_no_gap() -> None:
    # Thanksgiving 2026-11-26: the NYSE is closed; the last bar of the 25th is followed by the 27th's first.
    assert detect(tracker(), [row("2026-11-25T20:59"), row("2026-11-27T14:30")]) == []
    # A bar missing before the holiday is found, and only it.
    found = detect(tracker(), [row("2026-11-25T20:57"), row("2026-11-27T14:30")])
    assert spans(found) == [("2026-11-25 20:58", "2026-11-27 14:30", 2)]


def test_an_early_close_ends_the_session() -> None:
    # 2026-11-27 closes at 13:00 New York (18:00 UTC): 17:59 is its last minute bar.
    assert detect(tracker(), [row("2026-11-27T17:59"), row("2026-11-30T14:30")]) == []
    found = detect(tracker(), [row("2026-11-27T17:50"), row("2026-11-30T14:30")])
    assert spans(found) == [("2026-11-27 17:51", "2026-11-30 14:30", 9)]


def test_a_weekend_is_no_gap_and_daily_bars_count_sessions() -> None:
    assert detect(tracker(), [row("2026-11-20T20:59"), row("2026-11-23T14:30")]) == []
    assert detect(tracker(), [row("2026-11-20T00:00", timeframe="1d"), row("2026-11-23T00:00", timeframe="1d")]) == []
    # Wednesday 25th to Monday 30th: the 26th is a holiday, Friday the 27th a session (early close) -> 1.
    found = detect(tracker(), [row("2026-11-25T00:00", timeframe="1d"), row("2026-11-30T00:00", timeframe="1d")])
    assert spans(found) == [("2026-11-26 00:00", "2026-11-30 00:00", 1)]


def test_a_session_across_midnight_utc() -> None:
    # The ASX trades 10:00-16:00 Sydney time, 23:00-05:00 UTC in December (daylight saving).
    t = tracker(calendars=[{"calendar": "XASX", "symbol": "*.AX"}])
    found = detect(t, [row("2026-11-30T23:58", "BHP.AX"), row("2026-12-01T00:02", "BHP.AX")])
    assert spans(found) == [("2026-11-30 23:59", "2026-12-01 00:02", 3)]
    # Its close to the next open holds no trading time.
    assert detect(t, [row("2026-12-01T04:59", "CBA.AX"), row("2026-12-01T23:00", "CBA.AX")]) == []
    # The rule is by symbol: an unmatched symbol stays on the default calendar (night in New York).
    assert detect(t, [row("2026-11-30T23:58", "IBM"), row("2026-12-01T00:02", "IBM")]) == []


def test_a_lunch_break_is_no_gap() -> None:
    # Hong Kong breaks 12:00-13:00 local (04:00-05:00 UTC).
    t = tracker(calendars=[{"calendar": "XHKG", "vendor": "hkex"}])
    rows = [(us("2026-12-01T03:59"), T, "hkex", "0700", "1m"), (us("2026-12-01T05:00"), T, "hkex", "0700", "1m")]
    assert detect(t, rows) == []
    rows = [(us("2026-12-01T03:58"), T, "hkex", "0005", "1m"), (us("2026-12-01T05:00"), T, "hkex", "0005", "1m")]
    assert spans(detect(t, rows)) == [("2026-12-01 03:59", "2026-12-01 05:00", 1)]


def test_hourly_bars_follow_the_session_whatever_their_alignment() -> None:
    # Bars at the open (14:30, 15:30, ...) and at clock hours (15:00, 16:00, ...) alike.
    assert detect(tracker(), [row("2026-11-30T19:30", timeframe="1h"), row("2026-12-01T14:30", timeframe="1h")]) == []
    found = detect(tracker(), [row("2026-11-30T15:00", timeframe="1h"), row("2026-11-30T18:00", timeframe="1h")])
    assert spans(found) == [("2026-11-30 16:00", "2026-11-30 18:00", 2)]


def test_an_unknown_calendar_names_its_setting() -> None:
    rules = ContinuitySettings.model_validate({"calendars": [{"calendar": "XNYZ"}]}).rules()
    with pytest.raises(UnknownCalendar, match=r"continuity.calendars\[0\].calendar: unknown exchange calendar 'XNYZ'"):
        rules.check()
    with pytest.raises(UnknownCalendar):
        sessions("NOPE")


# -- order and late bars ---------------------------------------------------------------------------
def test_bars_out_of_order_in_a_batch_leave_only_the_true_holes() -> None:
    rows = [row(f"2026-11-30T15:{m:02d}") for m in (0, 5, 2, 1, 9, 7)]
    found = detect(tracker(), rows)
    assert sorted(spans(found)) == [
        ("2026-11-30 15:03", "2026-11-30 15:05", 2),
        ("2026-11-30 15:06", "2026-11-30 15:07", 1),
        ("2026-11-30 15:08", "2026-11-30 15:09", 1),
    ]


def test_a_late_bar_touches_the_open_gap_it_falls_in_and_its_recount_closes_it() -> None:
    t = tracker()
    key: Series = (T, "polygon", "AAPL", "1m")
    gap = OpenGap(us("2026-11-30T15:01"), us("2026-11-30T15:03"), 2, 2, 0.0, False)
    t.adopt(key, us("2026-11-30T15:10"), [gap])
    plan = t.plan([row("2026-11-30T15:02"), row("2026-11-30T14:00")])
    assert plan.candidates == []
    assert plan.touched == {T: {("polygon", "AAPL", "1m", us("2026-11-30T15:01"))}}
    t.apply(plan, [], [Counted(key, gap.gap_from_us, 1, False, False)])
    assert t.series[key].gaps[0].remaining == 1 and t.with_gaps == {key}
    t.recount([Counted(key, gap.gap_from_us, 0, True, False)])
    assert t.series[key].gaps == [] and t.with_gaps == set()
    # The newest bar never moves back.
    assert t.series[key].last_us == us("2026-11-30T15:10")


def test_a_plan_changes_nothing_until_applied() -> None:
    t = tracker()
    detect(t, [row("2026-11-30T15:00")])
    key: Series = (T, "polygon", "AAPL", "1m")
    plan = t.plan([row("2026-11-30T15:04")])
    assert spans(plan.candidates) == [("2026-11-30 15:01", "2026-11-30 15:04", 3)]
    assert t.series[key].last_us == us("2026-11-30T15:00")  # a failed flush leaves this
    assert spans(t.plan([row("2026-11-30T15:04")]).candidates) == spans(plan.candidates)


def test_resuming_a_plan_after_a_lookup_equals_planning_the_batch_again() -> None:
    # Two series known (one with an open gap a late bar falls in), two new ones; holes and bars out of
    # order in all four, interleaved as a batch has them.
    def world() -> Tracker:
        t = tracker()
        t.adopt((T, "polygon", "AAPL", "1m"), us("2026-11-30T15:00"), [])
        gap = OpenGap(us("2026-11-30T14:50"), us("2026-11-30T14:55"), 5, 5, 0.0, False)
        t.adopt((T, "polygon", "MSFT", "1m"), us("2026-11-30T15:00"), [gap])
        return t

    def at(minute: int) -> str:  # minutes after 15:00 (before it, negative)
        return (datetime(2026, 11, 30, 15, tzinfo=UTC) + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M")

    minutes = {"AAPL": (3, 1, 7), "MSFT": (2, -8, 6), "NVDA": (0, 4, 2), "TSLA": (1, 9, 5)}
    batch = [row(at(ms[i]), symbol) for i in range(3) for symbol, ms in minutes.items()]
    new = {(T, "polygon", s, "1m"): us(at(-2)) for s in ("NVDA", "TSLA")}

    resumed = world()
    plan = resumed.plan(batch)
    assert plan.unknown == {k: us(at(min(minutes[k[2]]))) for k in new}
    assert plan.unknown_rows == [r for r in batch if r[3] in ("NVDA", "TSLA")]
    for key, last in new.items():
        resumed.adopt(key, last, [])
    plan = resumed.resume(plan)
    assert plan.unknown == {} and plan.unknown_rows == []

    again = world()
    for key, last in new.items():
        again.adopt(key, last, [])
    whole = again.plan(batch)

    assert sorted(spans(plan.candidates)) == sorted(spans(whole.candidates)) != []
    assert plan.touched == whole.touched == {T: {("polygon", "MSFT", "1m", us("2026-11-30T14:50"))}}
    resumed.apply(plan, [], [])
    again.apply(whole, [], [])
    assert {k: s.last_us for k, s in resumed.series.items()} == {k: s.last_us for k, s in again.series.items()}


def test_unwatched_timeframes_and_the_gap_key() -> None:
    t = tracker(timeframes=["1d"])
    assert detect(t, [row("2026-11-30T15:00"), row("2026-11-30T15:09")]) == []
    key: Series = (T, "polygon", "AAPL", "1m")
    assert gap_key(key, us("2026-11-30T15:01"), us("2026-11-30T15:05")) == (
        "bar-gap/polygon/AAPL/1m/2026-11-30T15:01:00Z/2026-11-30T15:05:00Z"
    )
    long = (T, "v" * 150, "S" * 60, "1m")
    assert len(gap_key(long, 0, 60_000_000)) <= 200


def test_tiers_and_the_summary() -> None:
    t = tracker(tiers={"t0": ["AAPL", "MSFT"], "t1": ["*"]})
    detect(t, [row("2026-11-30T15:00"), row("2026-11-30T15:05")])
    detect(t, [row("2026-11-30T15:00", "ZZZ"), row("2026-11-30T15:01", "ZZZ")])
    key: Series = (T, "polygon", "AAPL", "1m")
    t.apply(t.plan([]), [(key, OpenGap(us("2026-11-30T15:01"), us("2026-11-30T15:05"), 4, 4, 0.0, False))], [])
    summary = t.summary()
    assert summary.series == {"t0": 1, "t1": 1}
    assert summary.with_gap == {"t0": 1}
    assert summary.open == {(T, "1m"): 1}
    assert summary.minutes == {(T, "1m"): 4}


def test_memory_is_bounded() -> None:
    t = tracker(max_series=100)
    rows = [row("2026-11-30T15:00", f"S{i}") for i in range(250)]
    plan = t.plan(rows)
    for key in plan.unknown:
        t.adopt(key, None, [])
    assert len(t.series) <= 100
    assert (T, "polygon", "S249", "1m") in t.series  # the newest stay
    # Rows of series evicted meanwhile are skipped, not an error, and stay unknown.
    assert t.resume(plan).candidates == [] and len(plan.unknown) == 250 - len(t.series)
