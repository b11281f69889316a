"""`admin policies`: from the database's current state and the settings to a list of changes (pure).

`policy_db` reads the state and runs the plan; everything that decides is here and takes plain
values, so the idempotence of `apply` (a second run plans nothing) is checked without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from mds_sink.config.policy_settings import PolicySettings, TablePolicy
from mds_sink.control import aggregates, isolation
from mds_sink.control.isolation import Isolation
from mds_sink.core.catalog import TABLES
from mds_sink.core.intervals import Interval
from mds_sink.core.tables import TableSpec


@dataclass(frozen=True, slots=True)
class TableState:
    name: str
    isolation: Isolation
    hypertable: bool = False
    chunk_interval: Interval | None = None
    compression: bool = False
    segmentby: tuple[str, ...] = ()
    orderby: tuple[str, ...] = ()  # "ts DESC", "vendor"
    compress_after: Interval | None = None  # the compression policy, if any
    keep: Interval | None = None  # the retention policy, if any
    # Roles other than the owner and the read-only role (reader_on_table) with a privilege on the table:
    # nobody needs one since migration 0007 (the writer too goes through tenant_view).
    grantees: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Exposure:
    """A TimescaleDB internal relation (chunk, compressed chunk, materialization) others may use."""

    relation: str  # schema.name, quoted where needed
    grantees: tuple[str, ...]  # "PUBLIC" for the pseudo-role


@dataclass(frozen=True, slots=True)
class FailedJob:
    job_id: int
    proc: str
    target: str  # the hypertable or continuous aggregate
    failures: int
    last_status: str | None
    last_error: str | None

    def describe(self) -> str:
        error = f"; last error: {self.last_error}" if self.last_error else ""
        return (
            f"job {self.job_id} {self.proc} on {self.target}: {self.failures} failed run(s), "
            f"last run {self.last_status or 'never'}{error}"
        )


@dataclass(frozen=True, slots=True)
class RefreshState:
    start_offset: Interval | None
    end_offset: Interval | None
    schedule_interval: Interval


@dataclass(frozen=True, slots=True)
class AggregateState:
    name: str
    kind: Literal["continuous", "view", "other"]
    tenant_view: bool
    refresh: RefreshState | None = None


@dataclass(frozen=True, slots=True)
class DatabaseState:
    timescaledb: str | None  # the extension's version in this database
    tables: Mapping[str, TableState]
    aggregates: Mapping[str, AggregateState]  # the ones that exist
    exposed: tuple[Exposure, ...] = ()  # TimescaleDB internal relations with a grantee but the owner
    failed_jobs: tuple[FailedJob, ...] = ()  # policy jobs with a failed run


@dataclass(frozen=True, slots=True)
class Change:
    target: str
    what: str
    sql: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Transaction:
    """Changes committed together: a table's switch to guard shares the transaction that needs it."""

    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    transactions: tuple[Transaction, ...]
    notes: tuple[str, ...] = field(default=())  # what is done instead, what is left alone

    @property
    def changes(self) -> list[Change]:
        return [c for t in self.transactions for c in t.changes]


def _spec_of(table: str) -> TableSpec:
    for spec in TABLES.values():
        if table in {t.table for t in spec.physical}:
            return spec
    raise KeyError(table)


def compression_layout(table: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Segment by tenant and symbol (a segment is what one query reads), order by time descending.

    The rest of the natural key follows the time in the order: TimescaleDB checks uniqueness on
    compressed chunks (upserts of old data) with it and warns when key columns are left out.
    """
    spec = _spec_of(table)
    symbol = "symbol" if "symbol" in spec.column_names else "underlying"
    segment = ("tenant_id", symbol)
    time = spec.time_column or spec.key[0]
    rest = tuple(k for k in spec.key if k not in {*segment, time})
    return segment, (f"{time} DESC", *rest)


def _same(a: Interval | None, b: Interval | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.key == b.key)


def _shown(i: Interval | None) -> str:
    return "none" if i is None else i.sql


def _compression_sql(table: str) -> str:
    segment, order = compression_layout(table)
    return (
        f"ALTER TABLE public.{table} SET (timescaledb.compress, "
        f"timescaledb.compress_segmentby = '{', '.join(segment)}', "
        f"timescaledb.compress_orderby = '{', '.join(order)}')"
    )


def _policy_sql(kind: Literal["compression", "retention"], table: str, after: Interval | None) -> tuple[str, ...]:
    arg = "compress_after" if kind == "compression" else "drop_after"
    remove = f"SELECT remove_{kind}_policy('public.{table}', if_exists => true)"
    if after is None:
        return (remove,)
    return remove, f"SELECT add_{kind}_policy('public.{table}', {arg} => interval '{after.sql}')"


def _table_changes(current: TableState, want: TablePolicy, *, has_aggregates: bool, reader: str) -> list[Change]:
    t = current.name
    changes: list[Change] = []
    if current.chunk_interval is None or not _same(current.chunk_interval, want.chunk_interval):
        changes.append(
            Change(
                t,
                f"chunk interval {_shown(current.chunk_interval)} -> {want.chunk_interval} (applies to new chunks)",
                (f"SELECT set_chunk_time_interval('public.{t}', interval '{want.chunk_interval.sql}')",),
            )
        )
    needs_guard = want.compress_after is not None or current.compression or has_aggregates
    iso = current.isolation
    if not iso.guard:
        changes.append(
            Change(
                t,
                "tenant_guard triggers added: chunks do not inherit row security, writes straight into a chunk "
                "are checked too",
                tuple(isolation.add_guard(t)),
            )
        )
    if needs_guard and iso.rls:
        why = "compression" if want.compress_after is not None or current.compression else "continuous aggregates"
        changes.append(
            Change(
                t,
                f"isolation rls -> guard in this transaction: TimescaleDB refuses {why} on a table with row "
                "security; the tenant_guard triggers reject other tenants' writes (42501), readers use "
                f"tenant_view.{t}",
                (isolation.rls_off(t),),
            )
        )
    changes.extend(_grantee_changes(current))
    if iso.reader_on_table:
        changes.append(
            Change(
                t,
                f"read-only role may no longer select the table (nor its chunks): tenant_view.{t} only",
                (isolation.reader_off(t, reader),),
            )
        )
    segment, order = compression_layout(t)
    if want.compress_after is not None and not current.compression:
        changes.append(
            Change(
                t,
                f"compression on: segment by {', '.join(segment)}; order by {', '.join(order)}",
                (_compression_sql(t),),
            )
        )
    elif current.compression and (current.segmentby, current.orderby) != (segment, order):
        changes.append(
            Change(
                t,
                f"compression layout -> segment by {', '.join(segment)}; order by {', '.join(order)} "
                "(chunks compressed from now on)",
                (_compression_sql(t),),
            )
        )
    if not _same(current.compress_after, want.compress_after):
        what = (
            f"compression policy removed (was {current.compress_after}); compressed chunks stay compressed"
            if want.compress_after is None
            else f"compression policy: compress chunks older than {want.compress_after} "
            f"(was {_shown(current.compress_after)})"
        )
        changes.append(Change(t, what, _policy_sql("compression", t, want.compress_after)))
    if not _same(current.keep, want.keep):
        what = (
            f"retention policy removed (was {current.keep})"
            if want.keep is None
            else f"retention policy: drop chunks older than {want.keep} (was {_shown(current.keep)})"
        )
        changes.append(Change(t, what, _policy_sql("retention", t, want.keep)))
    return changes


def _aggregate_changes(state: DatabaseState, settings: PolicySettings, reader: str) -> tuple[list[Change], list[str]]:
    changes: list[Change] = []
    notes: list[str] = []
    timescale = state.timescaledb is not None
    for agg in aggregates.AGGREGATES:
        found = state.aggregates.get(agg.name)
        if found is None:
            if timescale:
                what = (
                    f"continuous aggregate created ({agg.bucket} buckets of 1m bars; real-time), "
                    "materialized by its refresh policy"
                )
                sql = aggregates.create_continuous(agg, reader)
            else:
                what = f"plain view created ({agg.bucket} buckets of 1m bars, computed when read: nothing to refresh)"
                sql = aggregates.create_plain(agg, reader)
            changes.append(Change(agg.name, what, tuple(sql)))
        elif not found.tenant_view:
            changes.append(
                Change(agg.name, f"tenant_view.{agg.name} created", tuple(isolation.tenant_view(agg.name, reader)))
            )
        if found is not None and found.kind != ("continuous" if timescale else "view"):
            notes.append(f"{agg.name}: exists as a {found.kind} view; left as it is (drop it to have it recreated)")
            continue
        if timescale:
            want = settings.aggregates.refresh()[agg.name]
            have = found.refresh if found is not None else None
            if have is None or not (
                _same(have.start_offset, want.start_offset)
                and _same(have.end_offset, want.end_offset)
                and _same(have.schedule_interval, want.schedule_interval)
            ):
                changes.append(
                    Change(
                        agg.name,
                        f"refresh policy: every {want.schedule_interval}, window [now - {want.start_offset}, "
                        f"now - {want.end_offset})",
                        tuple(
                            aggregates.refresh_policy(agg, want.start_offset, want.end_offset, want.schedule_interval)
                        ),
                    )
                )
    return changes, notes


def _grantee_changes(current: TableState) -> list[Change]:
    if not current.grantees:
        return []
    t = current.name
    return [
        Change(
            t,
            f"privileges of {', '.join(current.grantees)} on the table revoked (and so on any chunk of it): "
            f"reads and the sink's writes go through tenant_view.{t}",
            tuple(f"REVOKE ALL ON public.{t} FROM {grantee_sql(g)}" for g in current.grantees),
        )
    ]


def grantee_sql(role: str) -> str:
    return "PUBLIC" if role == "PUBLIC" else '"' + role.replace('"', '""') + '"'


def _internal_changes(exposed: tuple[Exposure, ...]) -> list[Change]:
    """Chunks copy the grants of their hypertable (compressed ones those of the compressed hypertable),
    not its row security nor, for compressed chunks, its triggers: nobody but the owner may reach one.
    Re-checked on every apply, since chunks come and go all the time."""
    if not exposed:
        return []
    roles = sorted({g for e in exposed for g in e.grantees})
    return [
        Change(
            "_timescaledb_internal",
            f"privileges of {', '.join(roles)} on {len(exposed)} chunk, compressed-chunk or materialization "
            "relation(s) revoked: only the owner reaches TimescaleDB's internals",
            tuple(f"REVOKE ALL ON {e.relation} FROM {', '.join(grantee_sql(g) for g in e.grantees)}" for e in exposed),
        )
    ]


def plan(state: DatabaseState, settings: PolicySettings, *, reader: str) -> Plan:
    """Everything `admin policies apply` would change, one transaction per table."""
    notes: list[str] = []
    transactions: list[Transaction] = []
    want_aggregates = settings.aggregates.enabled
    if not want_aggregates and state.aggregates:
        notes.append(f"aggregates.enabled is false; {', '.join(sorted(state.aggregates))} exist and are left alone")
    agg_changes, agg_notes = _aggregate_changes(state, settings, reader) if want_aggregates else ([], [])
    notes.extend(agg_notes)
    if state.timescaledb is None:
        notes.append(
            "TimescaleDB is not installed in this database: tables stay plain PostgreSQL tables in rls isolation "
            "(no chunks, no compression); retention is `mds-sink admin retention apply`, which deletes old rows "
            "in batches (schedule it)"
        )
        plain = [c for t in sorted(state.tables) for c in _grantee_changes(state.tables[t])]
        if plain or agg_changes:
            transactions.append(Transaction(tuple(plain + agg_changes)))
        return Plan(tuple(transactions), tuple(notes))
    handled = {name for name, t in state.tables.items() if name in settings.tables() and t.hypertable}
    others = [c for t in sorted(set(state.tables) - handled) for c in _grantee_changes(state.tables[t])]
    if others:
        transactions.append(Transaction(tuple(others)))
    for name, want in settings.tables().items():
        current = state.tables.get(name)
        if current is None or not current.hypertable:
            notes.append(f"{name}: not a hypertable (created before TimescaleDB was installed?); left alone")
            continue
        source_of_aggregates = name == aggregates.SOURCE_TABLE and (
            want_aggregates or any(a.kind == "continuous" for a in state.aggregates.values())
        )
        changes = _table_changes(current, want, has_aggregates=source_of_aggregates, reader=reader)
        if name == aggregates.SOURCE_TABLE:
            changes += agg_changes  # after the switch to guard: a continuous aggregate needs it
        if changes:
            transactions.append(Transaction(tuple(changes)))
    internal = _internal_changes(state.exposed)
    if internal:
        transactions.append(Transaction(tuple(internal)))
    return Plan(tuple(transactions), tuple(notes))
