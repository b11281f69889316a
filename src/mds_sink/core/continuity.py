"""Bar continuity: which bars are missing between the bars that landed (pure; no I/O).

A series is (tenant, vendor, symbol, timeframe). The tracker keeps, per series, the newest bar written
and the gaps still open, and from a batch of bar rows plans:
- candidates: holes between consecutive bars of the series that hold trading time (core/calendars.py),
  a hole being the bars strictly between the two; the database keeps only those with no bar in them
  (a replay re-reads bars whose holes a backfill has filled since);
- touched: open gaps a late bar fell into, to be re-counted in the same transaction;
- the series' new newest bars, applied only once the flush has committed.

Bars out of order within a batch are normal: a bar older than the series' newest splits the hole it
falls into (a candidate of this batch) or touches the open gap it falls into.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mds_sink.core.calendars import Sessions, UnknownCalendar, sessions

Series = tuple[str, str, str, str]  # tenant, vendor, symbol, timeframe
Row = tuple[object, ...]

# Where a bars row holds these (core/tables.py BARS): ts (µs), tenant_id, vendor, symbol, timeframe.
TS, TENANT, VENDOR, SYMBOL, TIMEFRAME = 0, 1, 2, 3, 4
_SERIES_END = TIMEFRAME + 1
_KEY_MAX = 200  # jobs.idempotency_key


@dataclass(frozen=True, slots=True)
class Gap:
    """Bars missing strictly between two bars that landed: [gap_from, gap_to), `missing` of them."""

    series: Series
    gap_from_us: int  # where the first missing bar starts (the bar before + one step)
    gap_to_us: int  # where the bar after starts
    missing: int
    calendar: str

    @property
    def tenant(self) -> str:
        return self.series[0]


@dataclass(slots=True)
class OpenGap:
    gap_from_us: int
    gap_to_us: int
    missing: int  # at detection
    remaining: int  # still missing, as last counted
    opened_at: float  # epoch seconds
    requested: bool


@dataclass(slots=True)
class SeriesState:
    last_us: int | None  # the newest bar of the series written (None: none yet)
    calendar: Sessions | None  # None: the timeframe is not watched
    tier: str
    gaps: list[OpenGap] = field(default_factory=list)
    step_us: int = 0  # back-to-back bars are this far apart (asked of the calendar once); 0: not watched
    # Scratch of the plan numbered `plan`: the series' newest bar with that plan's rows (Tracker.plan).
    plan: int = 0
    planned_us: int | None = None


@dataclass(slots=True)
class Plan:
    """What a batch changes, applied to the tracker once its flush has committed."""

    candidates: list[Gap] = field(default_factory=list)
    touched: dict[str, set[tuple[str, str, str, int]]] = field(default_factory=dict)  # tenant -> gap keys
    number: int = 0
    touched_states: list[SeriesState] = field(default_factory=list)  # whose newest bar this plan moves
    unknown: dict[Series, int] = field(default_factory=dict)  # series not in memory -> oldest bar
    unknown_rows: list[Row] = field(default_factory=list)  # their rows, in batch order (Tracker.resume)
    holes: dict[Series, list[Gap]] = field(default_factory=dict)


def gap_key(series: Series, gap_from_us: int, gap_to_us: int) -> str:
    """The idempotency key of a gap's backfill job: the same gap always asks with the same key."""
    _tenant, vendor, symbol, timeframe = series
    start, end = _iso(gap_from_us), _iso(gap_to_us)
    key = f"bar-gap/{vendor}/{symbol}/{timeframe}/{start}/{end}"
    if len(key) <= _KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"bar-gap/{timeframe}/{start}/{end}/{digest}"


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class CalendarRule:
    """Series matching every given field trade on `calendar` (vendor and symbol may be globs)."""

    calendar: str
    setting: str  # where it was set, for the error naming an unknown calendar
    tenant: str | None = None
    vendor: str | None = None
    symbol: str | None = None

    def matches(self, tenant: str, vendor: str, symbol: str) -> bool:
        return (
            (self.tenant is None or self.tenant == tenant)
            and (self.vendor is None or fnmatch.fnmatchcase(vendor, self.vendor))
            and (self.symbol is None or fnmatch.fnmatchcase(symbol, self.symbol))
        )


class Rules:
    """The calendar and tier of a series (asked once per series); the last calendar rule matches all."""

    def __init__(
        self,
        calendars: Sequence[CalendarRule],
        *,
        timeframes: Iterable[str],
        tiers: Mapping[str, Sequence[str]],
        default_tier: str,
        load: Callable[[str], Sessions] = sessions,
    ) -> None:
        self._calendars = list(calendars)
        self._watched = frozenset(timeframes)
        self._tiers = dict(tiers)
        self._default_tier = default_tier
        self._load = load

    @property
    def calendar_names(self) -> list[str]:
        return sorted({rule.calendar for rule in self._calendars})

    def check(self) -> None:
        """Every calendar named can be built; raises UnknownCalendar naming the setting."""
        for rule in self._calendars:
            try:
                self._load(rule.calendar)
            except UnknownCalendar as exc:
                raise UnknownCalendar(f"{rule.setting}: {exc}") from None

    def calendar(self, series: Series) -> Sessions | None:
        tenant, vendor, symbol, timeframe = series
        if timeframe not in self._watched:
            return None
        for rule in self._calendars:
            if rule.matches(tenant, vendor, symbol):
                return self._load(rule.calendar)
        return None

    def tier(self, symbol: str) -> str:
        for tier, patterns in self._tiers.items():
            if any(fnmatch.fnmatchcase(symbol, p) for p in patterns):
                return tier
        return self._default_tier


class Tracker:
    """The last bar and the open gaps of each series seen, bounded to `max_series` series."""

    def __init__(self, rules: Rules, *, max_series: int) -> None:
        self.rules = rules
        self.max_series = max_series
        self.series: dict[Series, SeriesState] = {}
        self.with_gaps: set[Series] = set()
        self._plans = 0

    # -- series not in memory are looked up in the database ----------------------------------------
    def adopt(self, key: Series, last_us: int | None, gaps: Sequence[OpenGap]) -> None:
        """A series as the database knows it: its newest bar before the batch, and its open gaps."""
        if len(self.series) >= self.max_series:
            self._evict()
        calendar = self.rules.calendar(key)
        step = 0 if calendar is None else calendar.step_us(key[3])
        state = SeriesState(last_us, calendar, self.rules.tier(key[2]), sorted_gaps(gaps), step)
        self.series[key] = state
        if state.gaps:
            self.with_gaps.add(key)

    def _evict(self) -> None:
        """The least recently adopted tenth goes (it is looked up again when its next bar comes)."""
        drop = max(1, self.max_series // 10)
        for key in list(self.series)[:drop]:
            del self.series[key]
            self.with_gaps.discard(key)

    def clear(self) -> None:
        self.series.clear()
        self.with_gaps.clear()

    # -- a batch ----------------------------------------------------------------------------------
    def plan(self, rows: Iterable[Row]) -> Plan:
        """The batch's holes and the open gaps it touches; the tracker is left as it was.

        Series not in memory are skipped and listed in `plan.unknown` (with their oldest bar of the
        batch) and their rows in `plan.unknown_rows`: look them up, `adopt` them, and `resume` the plan.
        """
        self._plans += 1
        plan = Plan(number=self._plans)
        self._plan_rows(plan, rows)
        return plan

    def unknown(self, rows: Iterable[Row]) -> dict[Series, int]:
        """The series of `rows` not in memory, with their oldest bar of the batch (as `plan.unknown`)."""
        known = self.series
        out: dict[Series, int] = {}
        for row in rows:
            key: Series = row[TENANT:_SERIES_END]  # type: ignore[assignment]
            if key not in known:
                ts: int = row[TS]  # type: ignore[assignment]
                if ts < out.get(key, ts + 1):
                    out[key] = ts
        return out

    def resume(self, plan: Plan) -> Plan:
        """`plan` with the rows of the series adopted since it was made: the same plan as planning the
        whole batch again, at the cost of those rows only (series are planned independently, and each
        series' rows keep their batch order). Series still unknown stay in `plan.unknown`."""
        rows, plan.unknown, plan.unknown_rows = plan.unknown_rows, {}, []
        self._plan_rows(plan, rows)
        return plan

    def _plan_rows(self, plan: Plan, rows: Iterable[Row]) -> None:
        number, moved, unknown, unknown_rows = plan.number, plan.touched_states, plan.unknown, plan.unknown_rows
        holes = plan.holes
        state_of = self.series.get
        # One dictionary lookup a row: the plan's newest bar per series is kept on the series' state,
        # valid for this plan's number only (a plan that never commits leaves nothing behind).
        for row in rows:
            key: Series = row[TENANT:_SERIES_END]  # type: ignore[assignment]  # the four series columns, in order
            ts: int = row[TS]  # type: ignore[assignment]
            state = state_of(key)
            if state is None:
                if ts < unknown.get(key, ts + 1):
                    unknown[key] = ts
                unknown_rows.append(row)
                continue
            step = state.step_us
            if not step:
                continue
            if state.plan != number:
                state.plan, state.planned_us = number, state.last_us
                moved.append(state)
            last = state.planned_us
            if last is None:
                state.planned_us = ts
            elif ts > last:
                state.planned_us = ts
                if ts - last > step:
                    self._hole(holes, key, state.calendar, last, ts)  # type: ignore[arg-type]  # watched
            elif ts < last:
                self._late(plan, holes, key, state, ts)
        plan.candidates = [gap for found in holes.values() for gap in found]

    @staticmethod
    def _hole(holes: dict[Series, list[Gap]], key: Series, calendar: Sessions, before: int, after: int) -> None:
        if not calendar.covers(before, after):
            return
        missing = calendar.missing(key[3], before, after)
        if missing > 0:
            holes.setdefault(key, []).append(Gap(key, before + calendar.step_us(key[3]), after, missing, calendar.name))

    def _late(self, plan: Plan, holes: dict[Series, list[Gap]], key: Series, state: SeriesState, ts: int) -> None:
        found = holes.get(key)
        if found:
            for i, gap in enumerate(found):
                if gap.gap_from_us <= ts < gap.gap_to_us:
                    # A bar inside a hole of this very batch: the hole becomes the two on either side.
                    calendar = state.calendar
                    assert calendar is not None
                    step = calendar.step_us(key[3])
                    del found[i]
                    self._hole(holes, key, calendar, gap.gap_from_us - step, ts)
                    self._hole(holes, key, calendar, ts, gap.gap_to_us)
                    return
        for open_gap in state.gaps:
            if open_gap.gap_from_us <= ts < open_gap.gap_to_us:
                plan.touched.setdefault(key[0], set()).add((key[1], key[2], key[3], open_gap.gap_from_us))
                return

    # -- after the flush committed ----------------------------------------------------------------
    def apply(self, plan: Plan, opened: Iterable[tuple[Series, OpenGap]], counted: Iterable[Counted]) -> None:
        for moved in plan.touched_states:
            last = moved.planned_us
            if moved.plan == plan.number and last is not None and (moved.last_us is None or last > moved.last_us):
                moved.last_us = last
        for key, gap in opened:
            state = self.series.get(key)
            if state is not None and not any(g.gap_from_us == gap.gap_from_us for g in state.gaps):
                state.gaps.append(gap)
                state.gaps.sort(key=lambda g: g.gap_from_us)
                self.with_gaps.add(key)
        self.recount(counted)

    def recount(self, counted: Iterable[Counted]) -> None:
        """Open gaps as the database counted them now: closed ones go, the others keep their count."""
        for c in counted:
            state = self.series.get(c.series)
            if state is None:
                continue
            for gap in state.gaps:
                if gap.gap_from_us == c.gap_from_us:
                    gap.remaining, gap.requested = c.remaining, gap.requested or c.requested
            if c.closed:
                state.gaps = [g for g in state.gaps if g.gap_from_us != c.gap_from_us]
                if not state.gaps:
                    self.with_gaps.discard(c.series)

    def due(self, now: float, grace_s: float) -> dict[str, list[tuple[Series, OpenGap]]]:
        """Open gaps past their grace with no backfill requested yet, by tenant."""
        out: dict[str, list[tuple[Series, OpenGap]]] = {}
        for key in self.with_gaps:
            for gap in self.series[key].gaps:
                if not gap.requested and now - gap.opened_at >= grace_s:
                    out.setdefault(key[0], []).append((key, gap))
        return out

    def open_gaps(self) -> dict[str, list[tuple[Series, OpenGap]]]:
        out: dict[str, list[tuple[Series, OpenGap]]] = {}
        for key in self.with_gaps:
            out.setdefault(key[0], []).extend((key, g) for g in self.series[key].gaps)
        return out

    def summary(self) -> Summary:
        """What the gauges show: open gaps and missing bar-minutes by (tenant, timeframe), series by tier."""
        summary = Summary()
        for key, state in self.series.items():
            if state.calendar is None:
                continue
            summary.series[state.tier] = summary.series.get(state.tier, 0) + 1
            if not state.gaps:
                continue
            summary.with_gap[state.tier] = summary.with_gap.get(state.tier, 0) + 1
            place = (key[0], key[3])
            minutes = state.calendar.step_us(key[3]) // 60_000_000
            summary.open[place] = summary.open.get(place, 0) + len(state.gaps)
            summary.minutes[place] = summary.minutes.get(place, 0) + sum(g.remaining for g in state.gaps) * minutes
        return summary


@dataclass(frozen=True, slots=True)
class Counted:
    """An open gap re-counted by the database."""

    series: Series
    gap_from_us: int
    remaining: int
    closed: bool
    requested: bool


@dataclass(slots=True)
class Summary:
    open: dict[tuple[str, str], int] = field(default_factory=dict)
    minutes: dict[tuple[str, str], int] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)
    with_gap: dict[str, int] = field(default_factory=dict)


def sorted_gaps(gaps: Iterable[OpenGap]) -> list[OpenGap]:
    return sorted(gaps, key=lambda g: g.gap_from_us)


def by_tenant(candidates: Iterable[Gap]) -> Mapping[str, list[Gap]]:
    out: dict[str, list[Gap]] = {}
    for gap in candidates:
        out.setdefault(gap.tenant, []).append(gap)
    return out
