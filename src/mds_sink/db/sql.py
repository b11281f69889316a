"""SQL text for a flush, built once per table from its spec (pure, no I/O).

Rows are upserted through `tenant_view.<table>`, never into the tables: the writer has no privilege on
the tables themselves (migration 0007), so it can neither read nor write a row outside its tenant
context, in either isolation mode, nor reach a TimescaleDB chunk directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from mds_sink.core.tables import TableSpec, Target

# The views the sink writes through (security barrier, filtered by the tenant context, WITH CHECK OPTION).
WRITE_SCHEMA = "tenant_view"


@dataclass(frozen=True, slots=True)
class FlushSql:
    create_stage: str
    copy: str
    # One statement per set of targets (places in the spec's `physical`), parameter %(tenant)s: a
    # tenant's rows are upserted into just the tables they go to.
    upserts: dict[tuple[int, ...], str]
    binary_types: tuple[str, ...] | None = None  # the COPY is binary: psycopg's set_types()
    # An outbox's staged requests whose key is stored with another job (parameter %(tenant)s): run
    # before the upsert, in its transaction; any row it returns is dead-lettered, never dropped.
    conflicts: str | None = None

    @property
    def upsert(self) -> str:
        """The statement naming every target."""
        return self.upserts[max(self.upserts, key=len)]


def _changed(names: list[str]) -> str:
    excluded = ", ".join(f"EXCLUDED.{n}" for n in names)
    current = ", ".join(f"t.{n}" for n in names)
    return f"({excluded}) IS DISTINCT FROM ({current})"


def _insert(spec: TableSpec, target: Target, stage: str) -> str:
    names = list(spec.column_names)
    select = ", ".join(c.expr("s") for c in spec.columns)
    where = "s.tenant_id = %(tenant)s" + (f" AND s.{target.where}" if target.where else "")
    sql = (
        f"INSERT INTO {WRITE_SCHEMA}.{target.table} AS t ({', '.join(names)}) "
        f"SELECT {select} FROM {stage} s WHERE {where} "
        f"ON CONFLICT ({', '.join(spec.key)}) "
    )
    if spec.on_conflict == "ignore":
        return sql + "DO NOTHING"
    values = [n for n in names if n not in spec.key]
    sets = ", ".join(f"{n} = EXCLUDED.{n}" for n in values) + ", ingested_at = now()"
    # Rewriting an identical row costs a dead tuple and WAL: a replay must be a no-op.
    changed = _changed(values)
    rev = spec.revision_column
    condition = f"EXCLUDED.{rev} > t.{rev} OR (EXCLUDED.{rev} = t.{rev} AND {changed})" if rev else changed
    return sql + f"DO UPDATE SET {sets} WHERE {condition}"


def flush_sql(spec: TableSpec) -> FlushSql:
    """Staging DDL, COPY, and the statements that upsert a tenant's staged rows into its targets."""
    stage = f"mds_stage_{spec.name}"
    create = (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} ("
        + ", ".join(f"{c.name} {c.stage_type}" for c in spec.columns)
        + ") ON COMMIT DELETE ROWS"
    )
    copy = f"COPY {stage} ({', '.join(spec.column_names)}) FROM STDIN"
    if spec.copy_binary:
        copy += " (FORMAT BINARY)"
    types = tuple(c.stage_type for c in spec.columns) if spec.copy_binary else None
    places = range(len(spec.physical))
    subsets = [c for n in range(1, len(places) + 1) for c in combinations(places, n)]
    upserts = {subset: _upsert(spec, [spec.physical[p] for p in subset], stage) for subset in subsets}
    return FlushSql(create, copy, upserts, types, _conflicts(spec, stage))


def _conflicts(spec: TableSpec, stage: str) -> str | None:
    if not spec.conflict_columns:
        return None
    on = " AND ".join(f"t.{k} = {spec.column(k).expr('s')}" for k in spec.key)
    stored = ", ".join(f"t.{c}" for c in spec.conflict_columns)
    staged = ", ".join(spec.column(c).expr("s") for c in spec.conflict_columns)
    return (
        f"SELECT {', '.join(f's.{k}' for k in spec.key)} FROM {stage} s "
        f"JOIN {WRITE_SCHEMA}.{spec.physical[0].table} t ON {on} "
        f"WHERE s.tenant_id = %(tenant)s AND ({stored}) IS DISTINCT FROM ({staged})"
    )


def _upsert(spec: TableSpec, targets: list[Target], stage: str) -> str:
    """One statement: a tenant's staged rows into `targets`, and latest_prices from what was written."""
    inserts = [_insert(spec, target, stage) for target in targets]
    feed = spec.latest_price
    if feed is None:
        if len(inserts) == 1:
            return inserts[0]
        ctes = ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(inserts))
        return f"WITH {ctes} SELECT 1"
    returning = (
        f" RETURNING t.tenant_id, t.vendor, t.symbol, t.ts, {feed.price} AS price, {feed.bid} AS bid, "
        f"{feed.ask} AS ask, {feed.precedence} AS precedence"
    )
    ctes = ", ".join(f"w{i} AS ({sql}{returning})" for i, sql in enumerate(inserts))
    written = " UNION ALL ".join(f"SELECT * FROM w{i}" for i in range(len(inserts)))
    # The newest ts, and at an equal ts the highest precedence (tables.py: a quote, then the finest bar),
    # both within this batch (DISTINCT ON keeps the first row of the order) and against the stored row.
    # Row comparisons: (ts, precedence) are NOT NULL, so `>` orders by ts, then by precedence.
    return (
        f"WITH {ctes} "
        f"INSERT INTO {WRITE_SCHEMA}.latest_prices AS lp "
        "(tenant_id, vendor, symbol, price, bid, ask, ts, source, precedence) "
        f"SELECT DISTINCT ON (tenant_id, vendor, symbol) tenant_id, vendor, symbol, price, bid, ask, ts, "
        f"{feed.source}, precedence FROM ({written}) written "
        + (f"WHERE {feed.only_if} " if feed.only_if else "")
        + "ORDER BY tenant_id, vendor, symbol, ts DESC, precedence DESC "
        "ON CONFLICT (tenant_id, vendor, symbol) DO UPDATE SET price = EXCLUDED.price, bid = EXCLUDED.bid, "
        "ask = EXCLUDED.ask, ts = EXCLUDED.ts, source = EXCLUDED.source, precedence = EXCLUDED.precedence, "
        "updated_at = now() "
        # Only forward in time, then in precedence: a late or replayed older row never moves the latest
        # price back, nor does a coarser bar replace a finer one (or a quote) of its ts. At an equal rank
        # the newer values replace (a correction); identical ones write nothing.
        "WHERE (EXCLUDED.ts, EXCLUDED.precedence) > (lp.ts, lp.precedence) "
        "OR ((EXCLUDED.ts, EXCLUDED.precedence) = (lp.ts, lp.precedence) AND "
        "(EXCLUDED.price, EXCLUDED.bid, EXCLUDED.ask, EXCLUDED.source) IS DISTINCT FROM "
        "(lp.price, lp.bid, lp.ask, lp.source))"
    )


# Fencing (migration 0004): a member claims each partition it is assigned by moving its epoch, and a
# flush moves next_offset only under the epoch it claimed, never backwards. A member that lost the
# partition (a stall past the session timeout) finds another epoch and its transaction rolls back.
LEDGER_CLAIM = (
    "INSERT INTO sink_offsets AS o (consumer_group, topic, partition, next_offset, epoch) "
    "SELECT %s, v.topic, v.partition, 0, 1 FROM unnest(%s::text[], %s::integer[]) AS v(topic, partition) "
    "ORDER BY v.topic, v.partition "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET epoch = o.epoch + 1, updated_at = now() "
    "RETURNING o.topic, o.partition, o.next_offset, o.epoch"
)

LEDGER_ADVANCE = (
    "UPDATE sink_offsets AS o SET next_offset = greatest(o.next_offset, v.next_offset), updated_at = now() "
    "FROM unnest(%s::text[], %s::integer[], %s::bigint[], %s::bigint[]) AS v(topic, partition, next_offset, epoch) "
    "WHERE o.consumer_group = %s AND o.topic = v.topic AND o.partition = v.partition AND o.epoch = v.epoch "
    "RETURNING o.topic, o.partition"
)

SET_TENANT = "SELECT set_config('app.tenant_id', %s, true)"

# `offsets reset`: the group's rows for its topics go, in the transaction that moves Kafka's offsets.
LEDGER_CLEAR = "DELETE FROM sink_offsets WHERE consumer_group = %s AND topic = ANY(%s)"
