"""PostgreSQL side of a flush: one transaction that stages, upserts per tenant and moves the ledger."""

from __future__ import annotations

import struct
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from mds_sink.batcher import TopicPartition
from mds_sink.metrics import FLUSH_SECONDS
from mds_sink.sql import LEDGER_SELECT, LEDGER_UPSERT, SET_TENANT, FlushSql, flush_sql
from mds_sink.tables import TABLES, TableSpec
from mds_sink.validate import Row


@dataclass(frozen=True, slots=True)
class WriteResult:
    rows: int  # rows staged (after in-batch dedupe)
    tenants: int


def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout_s: float,
    statement_timeout_ms: int,
    name: str = "mds-sink",
) -> ConnectionPool:
    options = f"-c statement_timeout={statement_timeout_ms} -c application_name={name}"
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"connect_timeout": max(1, int(connect_timeout_s)), "options": options, "autocommit": True},
        open=False,
        name=name,
    )


class Writer:
    """Writes table batches. Tenant context is transaction-local, so a pooled connection never keeps it."""

    def __init__(self, pool: ConnectionPool, group: str) -> None:
        self._pool = pool
        self._group = group
        self._sql: dict[str, FlushSql] = {name: flush_sql(spec) for name, spec in TABLES.items()}
        # Temp tables live as long as the session: create each staging table once per connection.
        self._staged: weakref.WeakKeyDictionary[psycopg.Connection, set[str]] = weakref.WeakKeyDictionary()

    def write(
        self,
        spec: TableSpec,
        rows: Sequence[Row],
        next_offsets: Mapping[TopicPartition, int],
        *,
        commit: bool = True,
    ) -> WriteResult:
        """Stage, upsert tenant by tenant, move the ledger; all or nothing. `commit=False` probes."""
        sql = self._sql[spec.name]
        by_tenant = Counter(map(itemgetter(spec.tenant_index), rows))
        with self._pool.connection() as conn:
            staged = self._staged.setdefault(conn, set())
            if rows and spec.name not in staged:
                # Outside the flush transaction, so a rolled-back probe does not take the table with it.
                conn.execute(sql.create_stage)
                staged.add(spec.name)
            with conn.transaction(), conn.cursor() as cur:
                started = time.perf_counter()
                if rows:
                    self._copy(cur, sql, rows)
                copied = time.perf_counter()
                # One round trip for every tenant's statements and the ledger, not two per tenant: the
                # flush thread waits on the network once, and re-takes the GIL from the decoding once.
                # Statements still run in order in this transaction; the first error aborts the rest.
                with conn.pipeline():
                    for tenant in sorted(by_tenant):
                        cur.execute(SET_TENANT, (tenant,))
                        cur.execute(sql.upsert, {"tenant": tenant})
                    if next_offsets:
                        cur.executemany(
                            LEDGER_UPSERT, [(self._group, t, p, o) for (t, p), o in sorted(next_offsets.items())]
                        )
                if not commit:
                    raise psycopg.Rollback()
        if commit:
            FLUSH_SECONDS.labels("copy").observe(copied - started)
            FLUSH_SECONDS.labels("upsert").observe(time.perf_counter() - copied)
        return WriteResult(len(rows), len(by_tenant))

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], sql: FlushSql, rows: Sequence[Row]) -> None:
        with cur.copy(sql.copy) as copy:
            if sql.binary_types is not None:
                copy.set_types(list(sql.binary_types))
            for row in rows:
                try:
                    copy.write_row(row)
                except (TypeError, ValueError, OverflowError, struct.error) as exc:
                    # A value the binary format cannot carry as its column's type: that row is poison,
                    # as the server's refusal of the same value in text would be (found by halving).
                    raise psycopg.DataError(f"cannot stage {row!r:.200}: {exc}") from exc

    def ledger(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        with self._pool.connection() as conn:
            found = conn.execute(LEDGER_SELECT, (self._group, list(topics))).fetchall()
        return {(t, p): o for t, p, o in found}

    def tenants(self) -> dict[str, bool]:
        with self._pool.connection() as conn:
            return {str(t): bool(a) for t, a in conn.execute("SELECT tenant_id::text, active FROM tenants")}

    def schema_revision(self) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])
