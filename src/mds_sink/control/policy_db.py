"""The database side of `admin policies`: read the current state from the catalogs, run a plan.

Connections are the owner's. Applying holds the migrations' advisory lock, so policies never
interleave with a migration or with another `apply`, and the state is read after it is taken.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from mds_sink.control import aggregates
from mds_sink.control.isolation import GUARD_TRIGGERS, Isolation
from mds_sink.control.policies import AggregateState, Change, DatabaseState, Plan, RefreshState, TableState
from mds_sink.core.catalog import TENANT_TABLES
from mds_sink.core.intervals import Interval, parse_interval
from mds_sink.db.migrate import MIGRATION_LOCK_KEY

ISOLATION_SQL = """
SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity,
       (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = ANY(%(triggers)s))
           = cardinality(%(triggers)s),
       has_table_privilege(%(reader)s, c.oid, 'SELECT')
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%(tables)s)
"""

HYPERTABLES_SQL = """
SELECT h.hypertable_name, h.compression_enabled,
       (SELECT d.time_interval::text FROM timescaledb_information.dimensions d
        WHERE d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name
        ORDER BY d.dimension_number LIMIT 1)
FROM timescaledb_information.hypertables h
WHERE h.hypertable_schema = 'public'
"""

COMPRESSION_SQL = """
SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index, orderby_asc
FROM timescaledb_information.compression_settings
WHERE hypertable_schema = 'public'
ORDER BY hypertable_name, segmentby_column_index NULLS LAST, orderby_column_index NULLS LAST
"""

JOBS_SQL = """
SELECT proc_name, hypertable_name, config, schedule_interval::text
FROM timescaledb_information.jobs
WHERE hypertable_schema = 'public'
  AND proc_name IN ('policy_compression', 'policy_retention', 'policy_refresh_continuous_aggregate')
"""

AGGREGATES_SQL = """
SELECT c.relname, c.relkind::text,
       to_regclass('tenant_view.' || quote_ident(c.relname)) IS NOT NULL
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s) AND c.relkind IN ('v', 'm')
"""


def timescaledb_version(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return None if row is None else str(row[0])


def _interval(value: Any) -> Interval | None:
    return None if value is None else parse_interval(str(value))


def read_state(conn: psycopg.Connection[Any], *, reader: str) -> DatabaseState:
    version = timescaledb_version(conn)
    isolations = {
        name: Isolation(rls=bool(rls), guard=bool(guard), reader_on_table=bool(reads))
        for name, rls, guard, reads in conn.execute(
            ISOLATION_SQL, {"triggers": list(GUARD_TRIGGERS), "reader": reader, "tables": list(TENANT_TABLES)}
        )
    }
    tables = {name: TableState(name, iso) for name, iso in isolations.items()}
    names = [a.name for a in aggregates.AGGREGATES]
    continuous: set[str] = set()
    refresh: dict[str, RefreshState] = {}
    if version is not None:
        continuous = {
            str(r[0])
            for r in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates WHERE view_schema = 'public'"
            )
        }
        layouts: dict[str, tuple[list[str], list[str]]] = {}
        for table, column, segment_at, order_at, asc in conn.execute(COMPRESSION_SQL):
            segment, order = layouts.setdefault(table, ([], []))
            if segment_at is not None:
                segment.append(column)
            elif order_at is not None:
                order.append(column if asc else f"{column} DESC")
        policies: dict[tuple[str, str], Interval | None] = {}
        for proc, table, config, schedule in conn.execute(JOBS_SQL):
            cfg = config if isinstance(config, dict) else json.loads(config or "{}")
            if proc == "policy_compression":
                policies[("compress", table)] = _interval(cfg.get("compress_after"))
            elif proc == "policy_retention":
                policies[("keep", table)] = _interval(cfg.get("drop_after"))
            else:
                refresh[table] = RefreshState(
                    _interval(cfg.get("start_offset")), _interval(cfg.get("end_offset")), parse_interval(schedule)
                )
        for name, compressed, chunk in conn.execute(HYPERTABLES_SQL):
            if name not in tables:
                continue
            segment, order = layouts.get(name, ([], []))
            tables[name] = TableState(
                name,
                tables[name].isolation,
                hypertable=True,
                chunk_interval=_interval(chunk),
                compression=bool(compressed),
                segmentby=tuple(segment),
                orderby=tuple(order),
                compress_after=policies.get(("compress", name)),
                keep=policies.get(("keep", name)),
            )
    found = {
        name: AggregateState(
            name,
            "continuous" if name in continuous else "view" if kind == "v" else "other",
            bool(has_view),
            refresh.get(name),
        )
        for name, kind, has_view in conn.execute(AGGREGATES_SQL, (names,))
    }
    return DatabaseState(version, tables, found)


@contextmanager
def policy_lock(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An owner connection holding the migrations' advisory lock (waits for a running migrate/apply)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def apply_plan(
    conn: psycopg.Connection[Any], plan: Plan, *, lock_timeout_s: float, done: Callable[[Change], None]
) -> None:
    """Run each transaction of the plan; `done` hears of each change once its transaction commits."""
    for tx in plan.transactions:
        with conn.transaction():
            # A table switch waits for the sink's current flush; bounded, so the sink is never stalled
            # behind a queued ACCESS EXCLUSIVE lock for long.
            conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            for change in tx.changes:
                for statement in change.sql:
                    conn.execute(statement)
        for change in tx.changes:
            done(change)


def refresh_aggregates(
    conn: psycopg.Connection[Any], names: list[str], start: datetime, end: datetime, done: Callable[[str], None]
) -> None:
    """Materialize [start, end) of each continuous aggregate (autocommit: refresh refuses a transaction)."""
    for name in names:
        conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (f"public.{name}", start, end))
        done(name)
