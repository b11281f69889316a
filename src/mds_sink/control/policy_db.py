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
from mds_sink.control.policies import (
    AggregateState,
    Change,
    DatabaseState,
    Exposure,
    FailedJob,
    Plan,
    RefreshState,
    TableState,
)
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

# Who besides the owner (and the read-only role, reported on its own) holds a privilege on a table.
GRANTEES_SQL = """
SELECT relname, array_agg(DISTINCT grantee ORDER BY grantee) FROM (
    SELECT c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee
    FROM pg_class c, aclexplode(c.relacl) a
    WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%(tables)s) AND a.grantee <> c.relowner
) g
WHERE grantee <> %(reader)s
GROUP BY relname
"""

# TimescaleDB's relations of the owner's hypertables (chunks, compressed hypertables and chunks,
# materializations, the aggregates' partial and direct views) that anyone but their owner may use.
EXPOSED_SQL = """
SELECT relation, array_agg(DISTINCT grantee ORDER BY grantee) FROM (
    SELECT format('%I.%I', n.nspname, c.relname) AS relation,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
    WHERE n.nspname = '_timescaledb_internal' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND c.relowner = (SELECT relowner FROM pg_class WHERE oid = 'public.tenants'::regclass)
      AND a.grantee <> c.relowner
) g
GROUP BY relation ORDER BY relation
"""

# Every job of this database with a failed run (policies, and any job an operator added), with its last error.
FAILED_JOBS_SQL = """
SELECT j.job_id, j.proc_name, coalesce(j.hypertable_name, j.proc_schema || '.' || j.proc_name),
       s.total_failures, s.last_run_status,
       (SELECT e.err_message FROM timescaledb_information.job_errors e WHERE e.job_id = j.job_id
        ORDER BY e.finish_time DESC NULLS LAST LIMIT 1)
FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
WHERE s.total_failures > 0 OR s.last_run_status = 'Failed'
ORDER BY j.job_id
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
    grantees = {
        str(name): tuple(str(g) for g in roles)
        for name, roles in conn.execute(GRANTEES_SQL, {"reader": reader, "tables": list(TENANT_TABLES)})
    }
    tables = {name: TableState(name, iso, grantees=grantees.get(name, ())) for name, iso in isolations.items()}
    exposed: tuple[Exposure, ...] = ()
    failed: tuple[FailedJob, ...] = ()
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
                grantees=tables[name].grantees,
            )
        exposed = tuple(Exposure(str(rel), tuple(str(g) for g in roles)) for rel, roles in conn.execute(EXPOSED_SQL))
        failed = tuple(
            FailedJob(int(job), str(proc), str(target or ""), int(failures or 0), status, error)
            for job, proc, target, failures, status, error in conn.execute(FAILED_JOBS_SQL)
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
    return DatabaseState(version, tables, found, exposed, failed)


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
