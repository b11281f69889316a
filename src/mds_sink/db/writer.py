"""PostgreSQL side of a flush: one transaction that stages, upserts per tenant and moves the ledger."""

from __future__ import annotations

import struct
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from mds_sink.config.settings import DatabaseSettings
from mds_sink.core.batcher import TopicPartition
from mds_sink.core.catalog import TABLES
from mds_sink.core.tables import TableSpec
from mds_sink.core.validate import Row
from mds_sink.db.sql import LEDGER_ADVANCE, LEDGER_CLAIM, SET_TENANT, FlushSql, flush_sql
from mds_sink.errors import KeyConflicts, OwnershipLost
from mds_sink.metrics import FLUSH_SECONDS


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition claimed from the offsets ledger: where its rows end, and this member's epoch."""

    next_offset: int  # 0 where nothing was ever written
    epoch: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    rows: int  # rows staged (after in-batch dedupe)
    tenants: int
    also: list[tuple[Any, ...]] = field(default_factory=list)  # the rows of `write(also=)`'s statement
    # The rows of `write(after=)`'s statements: per tenant, one list per statement, in their order.
    after: dict[str, list[list[tuple[Any, ...]]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Also:
    """One more statement run last in a flush's transaction (Writer.write's `also`); `check` sees its
    rows before the commit and raises to roll the whole flush back. `first`, if given, runs in the
    same transaction before the upserts (with the same parameters; its rows are not read)."""

    statement: Any  # str or psycopg.sql.Composed
    params: Mapping[str, Any]
    check: Callable[[list[tuple[Any, ...]]], None] = lambda _rows: None
    first: Any = None


def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout_s: float,
    statement_timeout_ms: int,
    pool_timeout_s: float = 30.0,
    name: str = "mds-sink",
) -> ConnectionPool:
    # No JIT: the sink's statements are many and short, and a plan whose estimate passes jit_above_cost
    # (a gap lookup over a thousand series does) spent ~70 ms compiling to run for 8.
    options = f"-c statement_timeout={statement_timeout_ms} -c application_name={name} -c jit=off"
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"connect_timeout": max(1, int(connect_timeout_s)), "options": options, "autocommit": True},
        open=False,
        name=name,
        # How long a request waits for a connection: with the database away, a flush fails (and is
        # retried) after this, instead of psycopg_pool's default 30 s.
        timeout=pool_timeout_s,
    )


def database_pool(database: DatabaseSettings, *, min_size: int, max_size: int, name: str) -> ConnectionPool:
    """A pool of the writer role's connections, with the timeouts the settings give (not yet opened)."""
    return open_pool(
        database.url.get_secret_value(),
        min_size=min_size,
        max_size=max_size,
        connect_timeout_s=database.connect_timeout_s,
        statement_timeout_ms=database.statement_timeout_ms,
        pool_timeout_s=database.pool_timeout_s,
        name=name,
    )


class _Transaction:
    """An open flush transaction on a pooled connection: closing the stack commits and returns it."""

    def __init__(self, stack: ExitStack, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any]) -> None:
        self.stack, self.conn, self.cur = stack, conn, cur
        self.copy_s = 0.0

    def abandon(self, exc: BaseException) -> bool:
        """Roll back and return the connection; True if `exc` was psycopg.Rollback (swallowed)."""
        return bool(self.stack.__exit__(type(exc), exc, exc.__traceback__))


class Staged:
    """The first half of a flush done ahead of time: a transaction with the batch's rows COPYed in.

    Only the session's own temporary staging table is touched, so it holds no lock another writer
    could wait for; `Writer.write` finishes it (upserts, ledger, commit) in the flush's turn.
    """

    def __init__(self, spec: TableSpec, rows: Sequence[Row], txn: _Transaction) -> None:
        self._spec, self._count = spec.name, len(rows)
        self._ends = (rows[0], rows[-1]) if rows else None
        self._txn: _Transaction | None = txn

    def take(self, spec: TableSpec, rows: Sequence[Row]) -> _Transaction | None:
        """The transaction, if it holds exactly these rows; otherwise it is rolled back here."""
        txn, self._txn = self._txn, None
        ends = (rows[0], rows[-1]) if rows else None
        fits = spec.name == self._spec and len(rows) == self._count and ends is not None and self._ends is not None
        if txn is not None and fits and all(a is b for a, b in zip(ends or (), self._ends or (), strict=True)):
            return txn
        if txn is not None:
            txn.abandon(psycopg.Rollback())
        return None

    def discard(self) -> None:
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.abandon(psycopg.Rollback())


class Writer:
    """Writes table batches. Tenant context is transaction-local, so a pooled connection never keeps it."""

    def __init__(self, pool: ConnectionPool, group: str) -> None:
        self._pool = pool
        self._group = group
        self._sql: dict[str, FlushSql] = {name: flush_sql(spec) for name, spec in TABLES.items()}
        # Temp tables live as long as the session: create each staging table once per connection.
        self._staged: weakref.WeakKeyDictionary[psycopg.Connection, set[str]] = weakref.WeakKeyDictionary()

    def stage(self, spec: TableSpec, rows: Sequence[Row], *, pool_wait_s: float = 0.5) -> Staged:
        """Begin a flush's transaction and COPY its rows, to be finished by `write(..., staged=)`.

        It waits for a pooled connection only briefly: with the database away, the write begins anew in
        its turn (with its retries) rather than wait for this.
        """
        return Staged(spec, rows, self._begin(spec, rows, pool_wait_s=pool_wait_s))

    def write(
        self,
        spec: TableSpec,
        rows: Sequence[Row],
        next_offsets: Mapping[TopicPartition, int],
        *,
        fence: Mapping[TopicPartition, int] | None = None,
        commit: bool = True,
        staged: Staged | None = None,
        also: Also | None = None,
        after: Callable[[], Mapping[str, Sequence[tuple[Any, Mapping[str, Any]]]]] | None = None,
    ) -> WriteResult:
        """Stage, upsert tenant by tenant, move the ledger; all or nothing. `commit=False` probes.

        `fence` gives the epoch this member claimed for each partition of `next_offsets`: where the
        ledger holds another, the partition was assigned elsewhere since, and OwnershipLost rolls back.
        `staged`, if it holds these rows, is that transaction with the COPY done; it is used or rolled back.
        `also` runs last in the same transaction and its rows are returned: a backfill job moves its own
        positions there (it has no ledger rows), so they commit with the rows they cover, or not at all.
        `after` is asked, once the upserts are on their way to the server (so its work overlaps theirs),
        for statements to run next, per tenant and under its context (bar gaps); their rows are returned.
        """
        txn = staged.take(spec, rows) if staged is not None else None
        if txn is None:
            txn = self._begin(spec, rows)
        by_tenant = spec.tenant_targets(rows)
        upserts = self._sql[spec.name].upserts
        started = time.perf_counter()
        try:
            ledger = _ledger_params(self._group, next_offsets, fence or {})
            # One round trip for every tenant's statements and the ledger, not two per tenant: the
            # flush thread waits on the network once, and re-takes the GIL from the decoding once.
            # Statements still run in order in this transaction; the first error aborts the rest.
            conflict_sql = self._sql[spec.name].conflicts
            checks: list[psycopg.Cursor[Any]] = []
            followers: list[tuple[str, psycopg.Cursor[Any]]] = []
            with txn.conn.pipeline():
                if also is not None and also.first is not None:
                    txn.cur.execute(also.first, also.params)
                for tenant, targets in sorted(by_tenant.items()):
                    txn.cur.execute(SET_TENANT, (tenant,))
                    if conflict_sql is not None:
                        checks.append(txn.conn.cursor())
                        checks[-1].execute(conflict_sql, {"tenant": tenant})
                    txn.cur.execute(upserts[targets], {"tenant": tenant})
                if after is not None:
                    for tenant, statements in sorted(after().items()):
                        txn.cur.execute(SET_TENANT, (tenant,))
                        for statement, params in statements:
                            followers.append((tenant, txn.conn.cursor()))
                            followers[-1][1].execute(statement, params)
                if ledger is not None:
                    moved = txn.conn.cursor()
                    moved.execute(LEDGER_ADVANCE, ledger)
                if also is not None:
                    extra = txn.conn.cursor()
                    extra.execute(also.statement, also.params)
            conflicting = [tuple(str(v) for v in key) for check in checks for key in check.fetchall()]
            if conflicting and commit:  # a probe writes nothing either way: only a real write stops here
                raise KeyConflicts(spec.name, conflicting)  # rolls back; the flush takes them out, writes again
            if ledger is not None:
                _check_fence(next_offsets, moved.fetchall())
            returned: list[tuple[Any, ...]] = []
            after_rows: dict[str, list[list[tuple[Any, ...]]]] = {}
            for tenant, cursor in followers:
                after_rows.setdefault(tenant, []).append(cursor.fetchall())
            if also is not None:
                returned = extra.fetchall()
                also.check(returned)
            if not commit:
                raise psycopg.Rollback()
        except BaseException as exc:
            if txn.abandon(exc):  # the probe's own rollback
                return WriteResult(len(rows), len(by_tenant), returned, after_rows)
            raise
        txn.stack.close()  # commit, return the connection
        FLUSH_SECONDS.labels("copy").observe(txn.copy_s)
        FLUSH_SECONDS.labels("upsert").observe(time.perf_counter() - started)
        return WriteResult(len(rows), len(by_tenant), returned, after_rows)

    def _begin(self, spec: TableSpec, rows: Sequence[Row], *, pool_wait_s: float | None = None) -> _Transaction:
        """A pooled connection, a transaction on it, the rows COPYed into its staging table."""
        sql = self._sql[spec.name]
        stack = ExitStack()
        try:
            conn = stack.enter_context(self._pool.connection(timeout=pool_wait_s))
            staged = self._staged.setdefault(conn, set())
            if rows and spec.name not in staged:
                # Outside the flush transaction, so a rolled-back probe does not take the table with it.
                conn.execute(sql.create_stage)
                staged.add(spec.name)
            stack.enter_context(conn.transaction())
            txn = _Transaction(stack, conn, stack.enter_context(conn.cursor()))
            started = time.perf_counter()
            if rows:
                self._copy(txn.cur, sql, rows)
            txn.copy_s = time.perf_counter() - started
        except BaseException as exc:
            if not stack.__exit__(type(exc), exc, exc.__traceback__):
                raise
            raise AssertionError("unreachable: no context here swallows an error") from exc
        return txn

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

    def claim(
        self, partitions: Iterable[TopicPartition], *, pool_wait_s: float | None = None
    ) -> dict[TopicPartition, Claim]:
        """Claim partitions just assigned to this member: a new epoch for each, and where its rows end."""
        wanted = sorted(set(partitions))
        with self._pool.connection(timeout=pool_wait_s) as conn:
            found = conn.execute(LEDGER_CLAIM, (self._group, [t for t, _ in wanted], [p for _, p in wanted])).fetchall()
        return {(t, p): Claim(o, e) for t, p, o, e in found}

    def tenants(self) -> dict[str, bool]:
        with self._pool.connection() as conn:
            return {str(t): bool(a) for t, a in conn.execute("SELECT tenant_id::text, active FROM tenants")}


def _ledger_params(
    group: str, next_offsets: Mapping[TopicPartition, int], fence: Mapping[TopicPartition, int]
) -> tuple[Any, ...] | None:
    """LEDGER_ADVANCE's parameters: one array per column, in partition order (the order rows are locked)."""
    if not next_offsets:
        return None
    unfenced = sorted(set(next_offsets) - set(fence))
    if unfenced:
        # A batch of a partition this member never claimed: a bug upstream of here, never a write.
        raise OwnershipLost(f"no epoch claimed for {', '.join(f'{t}[{p}]' for t, p in unfenced)}")
    ordered = sorted(next_offsets.items())
    return (
        [t for (t, _), _ in ordered],
        [p for (_, p), _ in ordered],
        [o for _, o in ordered],
        [fence[tp] for tp, _ in ordered],
        group,
    )


def _check_fence(next_offsets: Mapping[TopicPartition, int], moved: Iterable[tuple[Any, ...]]) -> None:
    lost = sorted(set(next_offsets) - {(str(t), int(p)) for t, p in moved})
    if lost:
        raise OwnershipLost(
            f"{', '.join(f'{t}[{p}]' for t, p in lost)} claimed by another member since this one was assigned "
            "it: the batch is rolled back"
        )
