"""`admin retention apply`: remove rows older than each table's `keep`, now.

With TimescaleDB a hypertable loses whole chunks (`drop_chunks`: cheap, no dead rows; a chunk
goes once all of it is older than the cutoff, as with the retention policy). Without it, rows are
deleted in bounded batches, each its own transaction, so no run holds locks or piles up WAL for
long. Deletes go tenant by tenant under `app.tenant_id`: row security is forced on the owner too,
so without the context it would see, and delete, nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from mds_sink.config.policy_settings import PolicySettings
from mds_sink.core.catalog import TABLES
from mds_sink.core.intervals import Interval
from mds_sink.db.sql import SET_TENANT

Method = Literal["drop_chunks", "delete"]


@dataclass(frozen=True, slots=True)
class RetentionTask:
    table: str
    time_column: str
    keep: Interval
    method: Method


@dataclass(frozen=True, slots=True)
class RetentionResult:
    task: RetentionTask
    cutoff: datetime
    removed: int  # chunks dropped or rows deleted
    batches: int = 0

    def describe(self) -> str:
        t = self.task
        older = f"older than {self.cutoff:%Y-%m-%d %H:%M:%S%z} (keep {t.keep})"
        if t.method == "drop_chunks":
            return f"{t.table}: dropped {self.removed} chunks {older}"
        return f"{t.table}: deleted {self.removed} rows {older} in {self.batches} batches (plain PostgreSQL)"


def _time_columns() -> dict[str, str]:
    return {t.table: spec.time_column for spec in TABLES.values() for t in spec.physical if spec.time_column}


def retention_tasks(settings: PolicySettings, hypertables: Collection[str] | None) -> list[RetentionTask]:
    """One task per table with a `keep`; `hypertables` is None without TimescaleDB."""
    columns = _time_columns()
    tasks: list[RetentionTask] = []
    for table, policy in settings.tables().items():
        if policy.keep is None:
            continue
        method: Method = "drop_chunks" if hypertables is not None and table in hypertables else "delete"
        tasks.append(RetentionTask(table, columns[table], policy.keep, method))
    return tasks


def delete_batch_sql(task: RetentionTask) -> str:
    """One bounded batch of one tenant's old rows (parameters: tenant, cutoff, batch)."""
    t, ts = task.table, task.time_column
    return (
        f"DELETE FROM public.{t} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM public.{t} WHERE tenant_id = %(tenant)s::uuid AND {ts} < %(cutoff)s "
        "LIMIT %(batch)s))"
    )


def _cutoff(conn: psycopg.Connection[Any], keep: Interval) -> datetime:
    row = conn.execute(f"SELECT now() - interval '{keep.sql}'").fetchone()
    assert row is not None
    cutoff: datetime = row[0]
    return cutoff


def _drop_chunks(conn: psycopg.Connection[Any], task: RetentionTask) -> RetentionResult:
    cutoff = _cutoff(conn, task.keep)
    found = conn.execute(
        f"SELECT count(*) FROM drop_chunks('public.{task.table}', older_than => interval '{task.keep.sql}')"
    ).fetchone()
    return RetentionResult(task, cutoff, int(found[0]) if found else 0)


def _delete(conn: psycopg.Connection[Any], task: RetentionTask, batch_rows: int) -> RetentionResult:
    cutoff = _cutoff(conn, task.keep)
    sql = delete_batch_sql(task)
    tenants = [str(r[0]) for r in conn.execute("SELECT tenant_id FROM tenants ORDER BY tenant_id")]
    removed = batches = 0
    for tenant in tenants:
        while True:
            with conn.transaction():
                conn.execute(SET_TENANT, (tenant,))
                deleted = conn.execute(sql, {"tenant": tenant, "cutoff": cutoff, "batch": batch_rows}).rowcount
            batches += 1
            removed += deleted
            if deleted < batch_rows:
                break
    return RetentionResult(task, cutoff, removed, batches)


def run_retention(
    conn: psycopg.Connection[Any],
    tasks: list[RetentionTask],
    *,
    batch_rows: int,
    done: Callable[[RetentionResult], None],
) -> list[RetentionResult]:
    """Run the tasks on an autocommit owner connection; `done` hears of each table as it finishes."""
    results: list[RetentionResult] = []
    for task in tasks:
        result = _drop_chunks(conn, task) if task.method == "drop_chunks" else _delete(conn, task, batch_rows)
        done(result)
        results.append(result)
    return results
