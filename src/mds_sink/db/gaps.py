"""SQL of bar continuity (migration 0008): look series up, open gaps, re-count them, request backfills.

Every statement runs under the writer's tenant context (SET_TENANT) and reads and writes through
tenant_view, as the flush does. Instants travel as microseconds since the epoch (bigint), exactly as
the staged rows hold them: no float rounding on the way in or out.

Bars are read from the physical table of the timeframe's class (bars_minute, bars_hour, bars_day), not
the `bars` union view, so each lookup is one index scan of (tenant_id, symbol, timeframe, ts DESC).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from psycopg import sql

from mds_sink.core.calendars import step_us
from mds_sink.core.catalog import TABLES
from mds_sink.core.continuity import Counted, Gap, OpenGap, Series

_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_US = -62_135_510_400_000_000  # 0001-01-02: a window reaching further back starts there


def instants(values_us: Iterable[int]) -> list[datetime]:
    """µs since the epoch as exact UTC datetimes, sent as timestamptz: a bound computed in SQL (epoch +
    µs * interval) would not be pushed into the bars' index scan below tenant_view's security barrier."""
    return [_EPOCH_DT + timedelta(microseconds=us) for us in values_us]


def _us(ts: str) -> str:
    return f"(extract(epoch FROM {ts}) * 1000000)::bigint"


# timeframe -> the physical bars table it is stored in
BAR_TABLE: dict[str, str] = {v: t.table for t in TABLES["bars"].physical for v in t.values}

_T = TypeVar("_T")

Statement = tuple[sql.SQL | sql.Composed, Mapping[str, Any]]

# The series' newest bar before the batch's oldest (NULL: none), one row per series asked. Through
# tenant_view's security barrier `ORDER BY ts DESC LIMIT 1` is not answered from the index: the view is
# planned on its own and every bar of the series before the time would be read and sorted (months of
# minute bars). So the bar is looked for in windows growing back from the batch, the first that holds
# one answering (COALESCE evaluates no further): a series whose last bar is d bars back costs at most
# LOOKUP_GROWTH * d bars read, and only one silent for longer than every window reads its history.
LOOKUP_GROWTH = 64
LOOKUP_WINDOWS = 3  # 4, 256 and 16,384 bars back (of minute bars: 4 minutes, 4 hours, 11 days)


def _bars_back(n: int) -> int:
    return int(4 * LOOKUP_GROWTH**n)


def _window(n: int) -> str:
    return (
        "(SELECT max(b.ts) FROM {bars} b WHERE b.tenant_id = %(tenant)s AND b.vendor = s.vendor "
        f"AND b.symbol = s.symbol AND b.timeframe = s.timeframe AND b.ts >= s.w{n} AND b.ts < s.before)"
    )


def _instant(us: str) -> str:
    return f"timestamptz 'epoch' + {us} * interval '1 microsecond'"


# A lookup asks for every series new to the process at once (tens of thousands at start): each column
# travels as one string, split by the server, instead of an array dumped element by element in Python.
# No validated vendor, symbol or timeframe holds the separator (core/validate.py).
_SEP = "\x1f"


def _unpacked(param: str) -> str:
    return f"string_to_array(%({param})s, chr(31))"


def _packed(values: Iterable[object]) -> str:
    return _SEP.join(map(str, values))


_SERIES_UNPACKED = ", ".join(_unpacked(name) for name in ("vendors", "symbols", "timeframes"))


# The bounds are computed once per series in a materialized CTE from µs (cheaper to send than
# timestamps): its columns reach the probes as plain values, so their bounds are index conditions.
_LAST = sql.SQL(
    "WITH s AS MATERIALIZED (SELECT u.vendor, u.symbol, u.timeframe, "
    + _instant("u.before")
    + " AS before, "
    + ", ".join(
        _instant(f"greatest(u.before - u.step * {_bars_back(n)}, {_FIRST_US})") + f" AS w{n}"
        for n in range(LOOKUP_WINDOWS)
    )
    + " FROM unnest("
    + _SERIES_UNPACKED
    + ", "
    + ", ".join(_unpacked(name) + "::bigint[]" for name in ("before", "steps"))
    + ") AS u(vendor, symbol, timeframe, before, step)) "
    "SELECT s.vendor, s.symbol, s.timeframe, "
    + _us(
        # A series with no bar before the batch (new, or a fresh table) costs one probe.
        "CASE WHEN EXISTS (SELECT 1 FROM {bars} b WHERE b.tenant_id = %(tenant)s AND b.vendor = s.vendor "
        "AND b.symbol = s.symbol AND b.timeframe = s.timeframe AND b.ts < s.before) THEN COALESCE("
        + ", ".join(_window(n) for n in range(LOOKUP_WINDOWS))
        + ", (SELECT b.ts FROM {bars} b WHERE b.tenant_id = %(tenant)s AND b.vendor = s.vendor "
        f"AND b.symbol = s.symbol AND b.timeframe = s.timeframe AND b.ts < s.w{LOOKUP_WINDOWS - 1} "
        "ORDER BY b.ts DESC LIMIT 1)) END"
    )
    + " FROM s"
)

_OPEN_OF = (
    "SELECT g.vendor, g.symbol, g.timeframe, " + _us("g.gap_from") + ", " + _us("g.gap_to") + ", g.missing_bars, "
    "g.remaining_bars, extract(epoch FROM g.opened_at)::float8, g.backfill_requested_at IS NOT NULL "
    "FROM tenant_view.bar_gaps g JOIN unnest(" + _SERIES_UNPACKED + ") "
    "AS s(vendor, symbol, timeframe) ON g.vendor = s.vendor AND g.symbol = s.symbol AND g.timeframe = s.timeframe "
    "WHERE g.tenant_id = %(tenant)s AND g.closed_at IS NULL"
)

# Candidates with no bar in them now (a replay re-reads bars around holes a backfill has filled since);
# a gap stored already (open or closed) is left as it is. Returns the gaps opened.
_OPEN = sql.SQL(
    "INSERT INTO tenant_view.bar_gaps AS g (tenant_id, vendor, symbol, timeframe, gap_from, gap_to, "
    "missing_bars, remaining_bars, calendar) "
    "SELECT %(tenant)s, c.vendor, c.symbol, c.timeframe, c.f, c.t, c.missing, "
    "c.missing, c.calendar FROM unnest(%(vendors)s::text[], %(symbols)s::text[], %(timeframes)s::text[], "
    "%(froms)s::timestamptz[], %(tos)s::timestamptz[], %(missing)s::integer[], %(calendars)s::text[]) "
    "AS c(vendor, symbol, timeframe, f, t, missing, calendar) "
    # A scalar subquery, not NOT EXISTS: an anti-join would scan the tenant's bars of the timeframe once
    # per candidate (join clauses are not pushed below tenant_view's barrier); this is an index probe.
    "WHERE (SELECT b.ts FROM {bars} b WHERE b.tenant_id = %(tenant)s AND b.vendor = c.vendor "
    "AND b.symbol = c.symbol AND b.timeframe = c.timeframe "
    "AND b.ts >= c.f AND b.ts < c.t LIMIT 1) IS NULL "
    "ON CONFLICT (tenant_id, vendor, symbol, timeframe, gap_from) DO NOTHING "
    "RETURNING g.vendor, g.symbol, g.timeframe, " + _us("g.gap_from") + ", " + _us("g.gap_to") + ", g.missing_bars, "
    "extract(epoch FROM g.opened_at)::float8"
)

# Open gaps counted again: the bars present in them now; closed once all have come. Only a count that
# moved is written (a tick re-counts every open gap); every gap still open is returned, so an asked gap
# missing from the answer was closed elsewhere.
_RECOUNT = sql.SQL(
    "WITH k AS (SELECT g.vendor, g.symbol, g.timeframe, g.gap_from, g.missing_bars, g.remaining_bars, "
    "g.backfill_requested_at IS NOT NULL AS requested, "
    "(SELECT count(*) FROM {bars} b WHERE b.tenant_id = %(tenant)s AND b.vendor = g.vendor AND b.symbol = g.symbol "
    "AND b.timeframe = g.timeframe AND b.ts >= g.gap_from AND b.ts < g.gap_to) AS present "
    "FROM tenant_view.bar_gaps g JOIN unnest(%(vendors)s::text[], %(symbols)s::text[], %(timeframes)s::text[], "
    "%(froms)s::timestamptz[]) AS u(vendor, symbol, timeframe, f) ON g.vendor = u.vendor AND g.symbol = u.symbol "
    "AND g.timeframe = u.timeframe AND g.gap_from = u.f "
    "WHERE g.tenant_id = %(tenant)s AND g.closed_at IS NULL), "
    "moved AS (UPDATE tenant_view.bar_gaps AS g SET remaining_bars = greatest(0, k.missing_bars - k.present), "
    "closed_at = CASE WHEN k.present >= k.missing_bars THEN now() END, updated_at = now() FROM k "
    "WHERE g.tenant_id = %(tenant)s AND g.vendor = k.vendor AND g.symbol = k.symbol AND g.timeframe = k.timeframe "
    "AND g.gap_from = k.gap_from AND g.closed_at IS NULL "
    "AND (k.remaining_bars <> greatest(0, k.missing_bars - k.present) OR k.present >= k.missing_bars) RETURNING 1) "
    "SELECT k.vendor, k.symbol, k.timeframe, " + _us("k.gap_from") + ", greatest(0, k.missing_bars - k.present), "
    "k.present >= k.missing_bars, k.requested FROM k"
)

_UTC = '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\''

# One job per gap: the gap is marked under its row lock, so of several members (or ticks) asking at
# once one marks it and the others find it marked; the job's key is the gap's, so even a gap row made
# again could not ask twice. Returns the gaps asked for now, and whether the job was new.
REQUEST = (
    "WITH marked AS (UPDATE tenant_view.bar_gaps AS g SET backfill_requested_at = now(), backfill_key = k.key, "
    "updated_at = now() FROM unnest(%(vendors)s::text[], %(symbols)s::text[], %(timeframes)s::text[], "
    "%(froms)s::timestamptz[], %(keys)s::text[]) AS k(vendor, symbol, timeframe, f, key) "
    "WHERE g.tenant_id = %(tenant)s AND g.vendor = k.vendor AND g.symbol = k.symbol AND g.timeframe = k.timeframe "
    "AND g.gap_from = k.f AND g.closed_at IS NULL AND g.backfill_requested_at IS NULL "
    "RETURNING g.tenant_id, g.vendor, g.symbol, g.timeframe, g.gap_from, g.gap_to, g.remaining_bars, g.calendar, "
    "k.key), "
    "asked AS (INSERT INTO tenant_view.jobs AS j (tenant_id, idempotency_key, job_type, payload, priority, "
    "requested_at, requested_by) SELECT m.tenant_id, m.key, %(job_type)s, jsonb_build_object('kind', 'bars', "
    "'vendor', m.vendor, 'symbol', m.symbol, 'timeframe', m.timeframe, "
    f"'start', to_char(m.gap_from AT TIME ZONE 'UTC', {_UTC}), 'end', to_char(m.gap_to AT TIME ZONE 'UTC', {_UTC}), "
    "'missing_bars', m.remaining_bars, 'calendar', m.calendar), %(priority)s, now(), 'mds-sink continuity' "
    "FROM marked m ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING j.idempotency_key) "
    "SELECT m.vendor, m.symbol, m.timeframe, " + _us("m.gap_from") + ", "
    "EXISTS (SELECT 1 FROM asked a WHERE a.idempotency_key = m.key) FROM marked m"
)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the database knows of series new to this process: their newest bar before the batch, open gaps."""

    last: dict[Series, int | None]
    gaps: dict[Series, list[OpenGap]]


def _by_table(items: Iterable[_T], timeframe: Callable[[_T], str]) -> list[tuple[str, list[_T]]]:
    """`items` grouped by the bars table of their timeframe, in table order."""
    out: dict[str, list[_T]] = {}
    for item in items:
        out.setdefault(BAR_TABLE[timeframe(item)], []).append(item)
    return sorted(out.items())


def _bars(table: str) -> sql.Composable:
    return sql.Identifier("tenant_view", table)


def lookup_statements(tenant: str, oldest: Mapping[Series, int]) -> list[Statement]:
    """Statements (under `tenant`'s context) whose rows `read_lookup` turns into a Lookup."""
    out: list[Statement] = []
    for table, keys in _by_table(oldest, lambda key: key[3]):
        params = _arrays(tenant, keys, _packed) | {
            "before": _packed(oldest[k] for k in keys),
            "steps": _packed(step_us(k[3]) for k in keys),
        }
        out.append((_LAST.format(bars=_bars(table)), params))
    out.append((sql.SQL(_OPEN_OF), _arrays(tenant, list(oldest), _packed)))
    return out


def read_lookup(tenant: str, asked: Iterable[Series], results: Sequence[list[tuple[Any, ...]]]) -> Lookup:
    """The answer to `lookup_statements`, keyed by the very objects of `asked` (not equal strings read
    back): the tracker keeps those, and the rows of a series share them (core/validate.py), so the
    per-row lookups of the plan compare a series' strings by identity instead of reading them."""
    *lasts, opened = results
    keys = {key[1:]: key for key in asked}
    last: dict[Series, int | None] = {}
    for rows in lasts:
        for vendor, symbol, timeframe, ts in rows:
            key = keys.get((vendor, symbol, timeframe)) or (tenant, vendor, symbol, timeframe)
            last[key] = None if ts is None else int(ts)
    gaps: dict[Series, list[OpenGap]] = {}
    for vendor, symbol, timeframe, f, t, missing, remaining, opened_at, requested in opened:
        key = keys.get((vendor, symbol, timeframe)) or (tenant, vendor, symbol, timeframe)
        gaps.setdefault(key, []).append(OpenGap(int(f), int(t), missing, remaining, float(opened_at), bool(requested)))
    return Lookup(last, gaps)


def open_statements(tenant: str, candidates: Sequence[Gap]) -> list[Statement]:
    out: list[Statement] = []
    for table, gaps in _by_table(candidates, lambda gap: gap.series[3]):
        params = _arrays(tenant, [g.series for g in gaps]) | {
            "froms": instants(g.gap_from_us for g in gaps),
            "tos": instants(g.gap_to_us for g in gaps),
            "missing": [g.missing for g in gaps],
            "calendars": [g.calendar for g in gaps],
        }
        out.append((_OPEN.format(bars=_bars(table)), params))
    return out


def read_opened(tenant: str, rows: Iterable[tuple[Any, ...]]) -> list[tuple[Series, OpenGap]]:
    return [
        ((tenant, vendor, symbol, timeframe), OpenGap(int(f), int(t), missing, missing, float(at), False))
        for vendor, symbol, timeframe, f, t, missing, at in rows
    ]


def recount_statements(tenant: str, gaps: Iterable[tuple[str, str, str, int]]) -> list[Statement]:
    """Re-count open gaps, given as (vendor, symbol, timeframe, gap_from µs)."""
    out: list[Statement] = []
    for table, keys in _by_table(gaps, lambda gap: gap[2]):
        series = [(tenant, vendor, symbol, timeframe) for vendor, symbol, timeframe, _ in keys]
        params = _arrays(tenant, series) | {"froms": instants(k[3] for k in keys)}
        out.append((_RECOUNT.format(bars=_bars(table)), params))
    return out


def read_counted(
    tenant: str, asked: Iterable[tuple[str, str, str, int]], rows: Iterable[tuple[Any, ...]]
) -> list[Counted]:
    """The re-counted gaps; one asked that was not open any more (closed elsewhere) is closed."""
    out = [
        Counted((tenant, v, s, tf), int(f), int(remaining), bool(closed), bool(requested))
        for v, s, tf, f, remaining, closed, requested in rows
    ]
    found = {(c.series[1], c.series[2], c.series[3], c.gap_from_us) for c in out}
    out += [Counted((tenant, *k[:3]), k[3], 0, True, False) for k in asked if k not in found]
    return out


def request_params(
    tenant: str, gaps: Sequence[tuple[Series, int, str]], *, job_type: str, priority: int
) -> dict[str, Any]:
    """REQUEST's parameters for `gaps`: (series, gap_from µs, idempotency key)."""
    return _arrays(tenant, [g[0] for g in gaps]) | {
        "froms": instants(g[1] for g in gaps),
        "keys": [g[2] for g in gaps],
        "job_type": job_type,
        "priority": priority,
    }


def _arrays(tenant: str, keys: Sequence[Series], column: Callable[[Iterable[str]], Any] = list) -> dict[str, Any]:
    """The series' columns as parameters: arrays, or `_packed` strings for `_unpacked`."""
    return {
        "tenant": tenant,
        "vendors": column(k[1] for k in keys),
        "symbols": column(k[2] for k in keys),
        "timeframes": column(k[3] for k in keys),
    }
