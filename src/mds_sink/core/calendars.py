"""Trading sessions of an exchange, from exchange_calendars, as sorted arrays for O(log n) questions.

Gap detection asks one question per pair of bars that are not back to back: how many bars of this
timeframe fit in the trading time between them? exchange_calendars answers it, but through pandas, at
tens of microseconds a call; the sink asks it for every series at every session boundary. So each
calendar's schedule is read once into plain sorted lists (trading intervals with breaks taken out, and
the session days), and the questions are answered by bisection.

Intraday timeframes count trading seconds, independent of how a vendor aligns its bars (to the open or
to the clock): bars `a` < `b` of a step `s` miss floor(trading_time(a + s, b) / s) bars. Nights,
weekends, holidays, early closes and lunch breaks hold no trading time, so they never make a gap, and
a session that crosses midnight UTC is one interval like any other. Daily bars count the sessions
between the two bars' session days; weekly bars, the weeks that hold a session.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

_US = 1_000_000
_DAY_US = 86_400 * _US
# 1970-01-01 was a Thursday: the Monday-based week of a day number is (day + 3) // 7.
_WEEK_OFFSET_DAYS = 3
# The first session a calendar is built from (exchange_calendars' default start is 20 years back,
# which would move with the clock; stored bars are older than that in many deployments).
CALENDAR_START = "2000-01-03"

INTRADAY_STEP_US = {
    "1m": 60 * _US,
    "5m": 300 * _US,
    "15m": 900 * _US,
    "30m": 1_800 * _US,
    "1h": 3_600 * _US,
    "4h": 14_400 * _US,
}


def step_us(timeframe: str) -> int:
    """The nominal distance of back-to-back bars (a session-based timeframe's is a day or a week)."""
    return INTRADAY_STEP_US.get(timeframe) or (7 * _DAY_US if timeframe == "1w" else _DAY_US)


class UnknownCalendar(ValueError):
    """A calendar name exchange_calendars does not know."""


@dataclass(frozen=True, slots=True)
class Sessions:
    """One calendar's trading time, in microseconds since the epoch (UTC)."""

    name: str
    starts: list[int]  # trading intervals (sessions less their breaks), sorted, disjoint
    ends: list[int]
    before: list[int]  # trading time before interval i (prefix sums)
    days: list[int]  # session days (the session's label, days since the epoch), sorted
    weeks: list[int]  # Monday-based week numbers holding at least one session, sorted

    @property
    def first_us(self) -> int:
        return self.starts[0]

    @property
    def last_us(self) -> int:
        return self.ends[-1]

    def covers(self, a_us: int, b_us: int) -> bool:
        """Both instants within the calendar's known range (outside it nothing can be said)."""
        return self.first_us <= a_us and b_us <= self.last_us + _DAY_US

    def trading_us(self, a_us: int, b_us: int) -> int:
        """Trading time in [a, b)."""
        return max(0, self._elapsed(b_us) - self._elapsed(a_us))

    def _elapsed(self, t_us: int) -> int:
        """Trading time from the calendar's start to t."""
        i = bisect_right(self.starts, t_us) - 1
        if i < 0:
            return 0
        return self.before[i] + min(t_us, self.ends[i]) - self.starts[i]

    def missing(self, timeframe: str, a_us: int, b_us: int) -> int:
        """Bars of `timeframe` missing strictly between bars starting at a and at b (a < b)."""
        step = INTRADAY_STEP_US.get(timeframe)
        if step is not None:
            return self.trading_us(a_us + step, b_us) // step
        day_a, day_b = a_us // _DAY_US, b_us // _DAY_US
        if timeframe == "1d":
            return max(0, bisect_left(self.days, day_b) - bisect_right(self.days, day_a))
        if timeframe == "1w":
            week_a, week_b = (day_a + _WEEK_OFFSET_DAYS) // 7, (day_b + _WEEK_OFFSET_DAYS) // 7
            return max(0, bisect_left(self.weeks, week_b) - bisect_right(self.weeks, week_a))
        raise ValueError(f"no bar step for timeframe {timeframe!r}")

    def step_us(self, timeframe: str) -> int:
        return step_us(timeframe)


_NAT = -(2**63)  # NaT as an int64 (a session without a break has NaT for it)


def _column_us(values: Any) -> list[int]:
    """A pandas datetime column or index (UTC, or naive as session labels are) as µs since the epoch."""
    utc = values.dt.tz_convert(None) if hasattr(values, "dt") and values.dt.tz is not None else values
    if getattr(utc, "tz", None) is not None:
        utc = utc.tz_convert(None)
    stamps = utc.to_numpy(dtype="datetime64[us]").astype("int64")
    return [int(v) if v != _NAT else _NAT for v in stamps.tolist()]


_BUILT: dict[str, Sessions] = {}


def sessions(name: str) -> Sessions:
    """The calendar `name` (an exchange_calendars name such as XNYS, XLON, 24/7), built once per process
    (or handed in with `install`)."""
    found = _BUILT.get(name)
    if found is None:
        found = _BUILT[name] = build(name)
    return found


def install(built: Sessions) -> None:
    """A calendar built elsewhere (sink/calendar_loader.py builds them in a child process)."""
    _BUILT[built.name] = built


def build(name: str) -> Sessions:
    """The calendar `name` read from exchange_calendars."""
    # ~0.3 s to import (pandas): only in a process that detects gaps, never in the other commands.
    import exchange_calendars as xc  # noqa: PLC0415

    # exchange_calendars uses pandas APIs that newer pandas deprecates: its warnings are not ours to
    # act on (and would stop a test run that turns warnings into errors). Built once, at start.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        try:
            calendar = xc.get_calendar(name, start=CALENDAR_START)
        except xc.errors.InvalidCalendarName as exc:
            raise UnknownCalendar(f"unknown exchange calendar {name!r}") from exc
        schedule = calendar.schedule
    opens, closes = _column_us(schedule["open"]), _column_us(schedule["close"])
    if "break_start" in schedule.columns:
        pauses, resumes = _column_us(schedule["break_start"]), _column_us(schedule["break_end"])
    else:
        pauses = resumes = [_NAT] * len(opens)
    starts: list[int] = []
    ends: list[int] = []
    for opened, pause, resume, closed in zip(opens, pauses, resumes, closes, strict=True):
        if pause != _NAT:  # a lunch break splits the session in two
            starts += [opened, resume]
            ends += [pause, closed]
        else:
            starts.append(opened)
            ends.append(closed)
    before = [0] * len(starts)
    for i in range(1, len(starts)):
        before[i] = before[i - 1] + ends[i - 1] - starts[i - 1]
    days = [d // _DAY_US for d in _column_us(schedule.index)]
    weeks = sorted({(d + _WEEK_OFFSET_DAYS) // 7 for d in days})
    return Sessions(name, starts, ends, before, days, weeks)
