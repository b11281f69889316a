"""Bar continuity in the sink: gaps found in each bars flush, re-counted and backfilled on a timer.

In the flush (flush thread, `prepare` then `commit`):
1. series new to this process are looked up: their newest bar before the batch and their open gaps;
2. the tracker plans the batch's holes and the open gaps its late bars fall into (core/continuity.py);
3. the flush's transaction opens those holes that hold no bar, and re-counts the gaps touched, after
   the bars are upserted, under the same tenant context (db/writer.py `after`);
4. once it has committed, the tracker takes the batch's newest bars and the gaps opened and closed.
A flush that fails changes nothing here, and its retry plans again.

On a timer (its own thread, `tick`): every open gap this process knows is re-counted (bars written by
other paths, such as `mds-sink backfill`, close gaps too), one backfill job is requested for each gap
open past the grace period, and the gauges are set from the tracker.

Series belong to partitions: after a rebalance the tracker starts over, so that two members never
report the same series, and a series is looked up again at its next bar.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from mds_sink.config.continuity_settings import ContinuitySettings
from mds_sink.config.settings import Settings
from mds_sink.core.calendars import UnknownCalendar
from mds_sink.core.continuity import Counted, OpenGap, Plan, Rules, Series, Tracker, by_tenant, gap_key
from mds_sink.core.validate import Row
from mds_sink.db import gaps as sql
from mds_sink.db.sql import SET_TENANT
from mds_sink.db.writer import database_pool
from mds_sink.errors import StartupError, first_line
from mds_sink.metrics import (
    FLUSH_SECONDS,
    GAP_BACKFILLS,
    GAP_MINUTES,
    GAPS_CLOSED,
    GAPS_OPEN,
    GAPS_OPENED,
    SERIES,
    SERIES_WITH_GAP,
)
from mds_sink.sink.calendar_loader import preload

log = logging.getLogger(__name__)

Statements = dict[str, list[sql.Statement]]

# Batches are looked ahead for new series until this many in a row brought none: each partition's
# first batches bring theirs, whatever order the partitions come in.
QUIET_BATCHES = 4


@dataclass(frozen=True, slots=True)
class Pending:
    """A batch's plan and the statements it adds to the flush, until the flush commits."""

    plan: Plan
    statements: Statements
    opens: dict[str, int]  # tenant -> how many of its statements open gaps (the rest re-count)
    touched: dict[str, list[tuple[str, str, str, int]]]


class Continuity:
    def __init__(self, settings: ContinuitySettings, pool: ConnectionPool, rules: Rules | None = None) -> None:
        self.settings = settings
        if rules is None:
            rules = settings.rules()
            rules.check()  # an unknown calendar raises, naming its setting
        self.tracker = Tracker(rules, max_series=settings.max_series)
        self._pool = pool
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[tuple[str, str]] = set()
        self._generation = 0  # moved on by every rebalance: a lookup begun before it is not adopted
        self._quiet = 0  # batches in a row without a series new to the tracker (looked up ahead until many)
        for timeframe in settings.timeframes:  # at zero from the start: a rate over them is 0, not "no data"
            GAPS_OPENED.labels(timeframe)
            GAPS_CLOSED.labels(timeframe)
            GAP_BACKFILLS.labels(timeframe)

    # -- in the flush -----------------------------------------------------------------------------
    def look_ahead(self, rows: Sequence[Row]) -> None:
        """On the stager thread, while the batch before is written: look up the series of this batch new
        to the tracker and adopt them, so that its flush need not wait on the lookup. Only while new
        series come (at start, after a rebalance); never raises (the flush looks up what is missing).

        Adopting before the batch before has committed is sound: a series that batch carries is adopted
        by its own flush first, or planned against what this read, which is the same bars (the batch's
        rows are not committed yet); one it does not carry is untouched by it."""
        if not rows or self._quiet >= QUIET_BATCHES:
            return
        try:
            with self._lock:
                unknown, generation = self.tracker.unknown(rows), self._generation
                self._quiet = 0 if unknown else self._quiet + 1
            if unknown:
                found = self._lookup(unknown)
                with self._lock:
                    if generation == self._generation:  # no rebalance since: the series are still ours
                        self._take(found)
        except Exception as exc:
            log.debug("bar gaps: looking series up ahead failed: %s", first_line(exc))

    def prepare(self, rows: Sequence[Row]) -> Pending:
        """Look up new series and plan the batch. Raises psycopg errors (the flush retries them)."""
        with self._lock:
            plan = self.tracker.plan(rows)
            if plan.unknown:
                self._quiet = 0
        if plan.unknown:  # at start and after a rebalance: look them up, and plan their rows
            found = self._lookup(plan.unknown)
            with self._lock:
                self._take(found)
                plan = self.tracker.resume(plan)
        statements: Statements = {}
        opens: dict[str, int] = {}
        for tenant, candidates in by_tenant(plan.candidates).items():
            statements[tenant] = sql.open_statements(tenant, candidates)
            opens[tenant] = len(statements[tenant])
        touched = {tenant: sorted(keys) for tenant, keys in plan.touched.items()}
        for tenant, keys in touched.items():
            statements.setdefault(tenant, []).extend(sql.recount_statements(tenant, keys))
        return Pending(plan, statements, opens, touched)

    def commit(self, pending: Pending, after: Mapping[str, list[list[tuple[Any, ...]]]]) -> None:
        """The flush committed: take its newest bars and the gaps it opened and closed."""
        opened: list[tuple[Series, OpenGap]] = []
        counted: list[Counted] = []
        for tenant, results in after.items():
            n = pending.opens.get(tenant, 0)
            for rows in results[:n]:
                opened += sql.read_opened(tenant, rows)
            recounts = [row for rows in results[n:] for row in rows]
            if tenant in pending.touched:
                counted += sql.read_counted(tenant, pending.touched[tenant], recounts)
        with self._lock:
            self.tracker.apply(pending.plan, opened, counted)
        for key, _gap in opened:
            GAPS_OPENED.labels(key[3]).inc()
        for c in counted:
            if c.closed:
                GAPS_CLOSED.labels(c.series[3]).inc()

    def _lookup(self, oldest: dict[Series, int]) -> list[sql.Lookup]:
        """What the database knows of these series: their newest bar before `oldest`, their open gaps."""
        started = time.perf_counter()
        grouped: dict[str, dict[Series, int]] = {}
        for key, ts in oldest.items():
            grouped.setdefault(key[0], {})[key] = ts
        asked: list[tuple[str, dict[Series, int], list[psycopg.Cursor[Any]]]] = []
        # One round trip for every tenant's lookups; the database is busy with the writes meanwhile.
        with self._pool.connection() as conn, conn.transaction():
            with conn.pipeline():
                for tenant, series in sorted(grouped.items()):
                    conn.execute(SET_TENANT, (tenant,))
                    statements = sql.lookup_statements(tenant, series)
                    # The series travel packed, a string per column (db/gaps.py _packed).
                    cursors = [conn.execute(statement, params, binary=True) for statement, params in statements]
                    asked.append((tenant, series, cursors))
            found = [
                sql.read_lookup(tenant, series, [c.fetchall() for c in cursors]) for tenant, series, cursors in asked
            ]
        FLUSH_SECONDS.labels("gap_lookup").observe(time.perf_counter() - started)
        return found

    def _take(self, found: list[sql.Lookup]) -> None:
        """Adopt the series looked up that the tracker does not hold yet (under the lock)."""
        for lookup in found:
            for key, last in lookup.last.items():
                if key not in self.tracker.series:
                    self.tracker.adopt(key, last, lookup.gaps.get(key, []))

    # -- on the timer -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mds-gaps", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the timer, close the pool; never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.close()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.check_every_s):
            try:
                self.tick()
            except Exception as exc:  # the database away: the next tick tries again
                log.warning("bar gaps: re-count and backfill requests failed, trying again: %s", first_line(exc))

    def forget(self) -> None:
        """Partitions moved: start over (the series are looked up again at their next bar)."""
        with self._lock:
            self.tracker.clear()
            self._generation += 1
            self._quiet = 0
        self.publish()

    def tick(self, now: float | None = None) -> int:
        """Re-count the open gaps, request the backfills due; returns the jobs requested."""
        now = time.time() if now is None else now
        with self._lock:
            known = self.tracker.open_gaps()
            due = self.tracker.due(now, self.settings.grace_s)
        requested = 0
        if known:
            with self._pool.connection() as conn, conn.transaction():
                for tenant, gaps in sorted(known.items()):
                    conn.execute(SET_TENANT, (tenant,))
                    asked = [(k[1], k[2], k[3], g.gap_from_us) for k, g in gaps]
                    rows = [r for s, p in sql.recount_statements(tenant, asked) for r in conn.execute(s, p).fetchall()]
                    counted = sql.read_counted(tenant, asked, rows)
                    with self._lock:
                        self.tracker.recount(counted)
                    for c in counted:
                        if c.closed:
                            GAPS_CLOSED.labels(c.series[3]).inc()
        for tenant, gaps in sorted(due.items()):
            requested += self._request(tenant, gaps)
        self.publish()
        return requested

    def _request(self, tenant: str, gaps: list[tuple[Series, OpenGap]]) -> int:
        with self._lock:  # closed by the re-count just now: not due any more
            still = [(k, g) for k, g in gaps if self._still_open(k, g)]
        if not still:
            return 0
        asks = [(k, g.gap_from_us, gap_key(k, g.gap_from_us, g.gap_to_us)) for k, g in still]
        params = sql.request_params(tenant, asks, job_type=self.settings.job_type, priority=self.settings.job_priority)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(SET_TENANT, (tenant,))
            rows = conn.execute(sql.REQUEST, params).fetchall()
        new = 0
        for _vendor, _symbol, timeframe, _from, created in rows:
            if created:
                new += 1
                GAP_BACKFILLS.labels(timeframe).inc()
        with self._lock:
            for _key, gap in still:  # asked now, or by another member before: never again from here
                gap.requested = True
        if new:
            log.info("bar gaps: %d backfill job(s) requested for tenant %s", new, tenant)
        return new

    def _still_open(self, key: Series, gap: OpenGap) -> bool:
        state = self.tracker.series.get(key)
        return state is not None and any(g is gap for g in state.gaps)

    def publish(self) -> None:
        with self._lock:
            summary = self.tracker.summary()
        places = set(summary.open)
        for tenant, timeframe in self._reported - places:  # a tenant's gaps all closed: its series go
            GAPS_OPEN.remove(tenant, timeframe)
            GAP_MINUTES.remove(tenant, timeframe)
        for place in places:
            GAPS_OPEN.labels(*place).set(summary.open[place])
            GAP_MINUTES.labels(*place).set(summary.minutes[place])
        self._reported = places
        for tier in set(summary.series) | {self.settings.default_tier, *self.settings.tiers}:
            SERIES.labels(tier).set(summary.series.get(tier, 0))
            SERIES_WITH_GAP.labels(tier).set(summary.with_gap.get(tier, 0))


def open_continuity(settings: Settings, tables: Iterable[str]) -> Continuity | None:
    """Gap detection for a sink writing `tables`, if it writes bars and continuity.enabled; its calendars
    built now (in a child process: the sink never imports pandas). An unknown calendar is a
    StartupError naming its setting."""
    if not settings.continuity.enabled or "bars" not in set(tables):
        return None
    try:
        rules = settings.continuity.rules()
        with contextlib.suppress(UnknownCalendar):  # check() below says which setting names it
            preload(rules.calendar_names)
        rules.check()  # every calendar is built by now
    except UnknownCalendar as exc:
        raise StartupError(f"invalid setting {exc}") from None
    # A pool of its own: a flush waits on its lookups while holding a connection of the writer's
    # pool, and the stager may hold another; sharing that pool could leave the lookup none. Two: the
    # stager's lookups ahead never keep the flush's (or the timer's) waiting.
    pool = database_pool(settings.database, min_size=0, max_size=2, name="mds-sink-gaps")
    pool.open()
    return Continuity(settings.continuity, pool, rules)
