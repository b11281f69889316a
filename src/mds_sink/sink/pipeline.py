"""The flow of a record, in order: decode -> validate -> batch; and of a batch: settle, then commit.

poll -> decode -> validate -> batch          (Ingest.add, on the consumer thread)
settle(batch):                               (on the flush thread)
    1. produce the batch's dead letters and wait for the broker's acknowledgement
    2. one transaction: COPY to staging, upsert per tenant (bars: and the gaps they open and close),
       offsets ledger
       (the transaction and its COPY may have begun while the batch before was written)
       (a poison row: roll back, isolate the bad rows by halving, dead-letter them, go to 1)
    3. hand the next offsets back; the consumer thread commits them to Kafka, only now
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from mds_sink.avro.codec import Decoder
from mds_sink.core import tenancy
from mds_sink.core.batcher import Batcher, DeadLetter, Source, TableBatch, TopicPartition
from mds_sink.core.catalog import VALIDATORS
from mds_sink.core.rejection import RecordRejected, Rejection, field_error, with_context
from mds_sink.core.tables import TableSpec
from mds_sink.core.tenancy import TenantTopics
from mds_sink.core.validate import Record, Row, Rules
from mds_sink.db.classify import classify, write_rejection
from mds_sink.db.writer import Staged, WriteResult
from mds_sink.errors import ErrorClass, KeyConflicts

log = logging.getLogger(__name__)


class Message(Protocol):
    """What the pipeline reads of a consumed record (confluent_kafka.Message has all of it)."""

    def error(self) -> Any: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def headers(self) -> Any: ...  # a list of (name, value) for a consumed record


@dataclass(frozen=True, slots=True)
class _Lane:
    """Everything a topic's records go through, looked up once per topic instead of once per record."""

    spec: TableSpec
    decode: Callable[[bytes | None], Record]
    validate: Callable[[Record, Rules], Row]
    tenant_at: int  # where the row holds its tenant
    topic_tenant: str | None  # the tenant of a tenant-scoped topic ("" if its name holds none)


@dataclass
class Ingest:
    """Decode, validate and batch records of the routed topics."""

    routes: Mapping[str, TableSpec]  # topic -> table
    decoders: Mapping[str, Decoder]  # table -> decoder
    rules: Rules
    batcher: Batcher
    on_reject: Callable[[DeadLetter], None] = lambda _dl: None
    validators: Mapping[str, Callable[[Record, Rules], Row]] = field(default_factory=lambda: VALIDATORS)
    # Tenant-scoped topics (topics.tenant_topics): routes hold the base topics, records come from `mds.<T>.bars`.
    tenant_topics: TenantTopics | None = None
    _lanes: dict[str, _Lane] = field(default_factory=dict)

    def _lane(self, topic: str) -> _Lane:
        spec, topic_tenant = self.routes.get(topic), None
        if spec is None and self.tenant_topics is not None:
            routed = self.tenant_topics.route(topic)
            if routed is not None:
                spec, topic_tenant = self.routes[routed[0]], routed[1]
        if spec is None:
            raise KeyError(topic)
        tenant_at = spec.column_names.index("tenant_id")
        lane = _Lane(spec, self.decoders[spec.name].decode, self.validators[spec.name], tenant_at, topic_tenant)
        self._lanes[topic] = lane
        return lane

    def add_all(self, msgs: Sequence[Message], now_ms: float) -> tuple[dict[str, int], list[Message]]:
        """A poll's records into their batches; returns records per topic, and the error events."""
        counts: dict[str, int] = {}
        errors: list[Message] = []
        batches: dict[str, TableBatch] = {}  # no batch is taken while this runs
        rules = self.rules
        for msg in msgs:
            if msg.error() is not None:
                errors.append(msg)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None  # set on every record
            lane = self._lanes.get(topic) or self._lane(topic)
            batch = batches.get(topic)
            if batch is None:
                batch = batches[topic] = self.batcher.batch(lane.spec, now_ms)
            value = msg.value()
            size = len(value) if value is not None else 0
            source = Source(topic, partition, offset, msg)
            counts[topic] = counts.get(topic, 0) + 1
            try:
                row = lane.validate(lane.decode(value), rules)
            except RecordRejected as exc:
                self._reject(batch, DeadLetter(source, with_context(exc.rejection, exc)), size)
                continue
            except (KeyError, TypeError, ValueError) as exc:  # a writer schema without a field the rules need
                self._reject(batch, DeadLetter(source, with_context(field_error(exc), exc)), size)
                continue
            # Topic, key and headers must not name another tenant than the value (core/tenancy.py).
            claimed = tenancy.check(row[lane.tenant_at], topic_tenant=lane.topic_tenant, key=msg.key(), headers=None)
            if claimed is None and msg.headers():
                claimed = tenancy.check(row[lane.tenant_at], topic_tenant=None, key=None, headers=msg.headers())
            if claimed is not None:
                self._reject(batch, DeadLetter(source, claimed), size)
                continue
            batch.add(row, source, size)
        return counts, errors

    def _reject(self, batch: TableBatch, dead: DeadLetter, size: int) -> None:
        batch.reject(dead.source, dead.rejection, size)
        self.on_reject(dead)


class RowWriter(Protocol):
    def write(
        self,
        spec: TableSpec,
        rows: Sequence[Row],
        next_offsets: Mapping[TopicPartition, int],
        *,
        fence: Mapping[TopicPartition, int] | None = None,
        commit: bool = True,
        staged: Staged | None = None,
        after: Callable[[], Mapping[str, Sequence[tuple[Any, Mapping[str, Any]]]]] | None = None,
    ) -> WriteResult: ...


class GapWatch(Protocol):
    """Bar continuity (sink/continuity.py): plans a batch's gaps, and takes them once it committed."""

    def prepare(self, rows: Sequence[Row]) -> Any: ...
    def commit(self, pending: Any, after: Mapping[str, list[list[tuple[Any, ...]]]]) -> None: ...


class _Planned:
    """The batch's gap statements, planned while its upserts run (Writer.write's `after`)."""

    def __init__(self, gaps: GapWatch, rows: Sequence[Row]) -> None:
        self._gaps, self._rows = gaps, rows
        self.pending: Any = None

    def __call__(self) -> Mapping[str, Sequence[tuple[Any, Mapping[str, Any]]]]:
        self.pending = self._gaps.prepare(self._rows)
        statements: Mapping[str, Sequence[tuple[Any, Mapping[str, Any]]]] = self.pending.statements
        return statements


class DeadLetterSink(Protocol):
    def __call__(self, dead: Sequence[DeadLetter]) -> None:
        """Produce and wait for the broker's acknowledgement; raise if not acknowledged."""
        ...


@dataclass(frozen=True, slots=True)
class Settled:
    table: str
    rows: int
    dead_letters: list[DeadLetter]
    next_offsets: dict[TopicPartition, int]
    newest_event_us: dict[str, int] = field(default_factory=dict)  # topic -> newest event time written


class PoisonNotIsolated(Exception):
    """The database refused the batch but no single row could be blamed: a bug, never dead-lettered."""


def isolate_poison(spec: TableSpec, entries: Sequence[tuple[Row, Source]], writer: RowWriter) -> list[DeadLetter]:
    """Halve the rows until each refused one stands alone; probes are rolled back, never committed."""
    try:
        writer.write(spec, [row for row, _ in entries], {}, commit=False)
        return []
    except psycopg.Error as exc:
        if classify(exc) is not ErrorClass.POISON:
            raise
        if len(entries) == 1:
            return [DeadLetter(entries[0][1], write_rejection(exc))]
    mid = len(entries) // 2
    return isolate_poison(spec, entries[:mid], writer) + isolate_poison(spec, entries[mid:], writer)


def acknowledge_dead_letters(batch: TableBatch, send_dead_letters: DeadLetterSink) -> None:
    """Produce the batch's dead letters not yet acknowledged, and remember that they are.

    A flush is retried whole after a transient failure; what the broker already acknowledged is
    never sent again, so a bad record has exactly one dead letter whatever happens around it.
    """
    pending = batch.dead_letters[batch.acknowledged :]
    if pending:
        send_dead_letters(pending)
    batch.acknowledged = len(batch.dead_letters)


def settle(
    batch: TableBatch,
    writer: RowWriter,
    send_dead_letters: DeadLetterSink,
    *,
    ahead: Staged | None = None,
    gaps: GapWatch | None = None,
) -> Settled:
    """Steps 1 and 2 of the flow. Transient errors propagate to the caller, which retries all of it.

    The batch keeps what was done across those retries: dead letters acknowledged, and rows found
    poison (moved from its rows to its dead letters).
    `ahead`: this batch's transaction begun while the one before it was written (its COPY done, nothing
    committed, no lock held but on the session's own staging table); the first write finishes it.
    `gaps`: for bars, the batch's gaps are opened and closed in the same transaction.
    """
    spec = batch.spec
    staged = ahead
    try:
        for _attempt in range(3):
            # Step 1: the decode/validate dead letters are acknowledged before any offset can move.
            acknowledge_dead_letters(batch, send_dead_letters)
            try:
                # Step 2: rows and ledger in one transaction, under the epochs this member claimed.
                rows = [row for row, _ in batch.rows.values()]
                taken, staged = staged, None
                if gaps is None:
                    result = writer.write(spec, rows, batch.next_offsets, fence=batch.fence, staged=taken)
                else:
                    planned = _Planned(gaps, rows)
                    result = writer.write(
                        spec, rows, batch.next_offsets, fence=batch.fence, staged=taken, after=planned
                    )
                    gaps.commit(planned.pending, result.after)
                return Settled(spec.name, result.rows, list(batch.dead_letters), dict(batch.next_offsets))
            except KeyConflicts as exc:
                # Out of the rows, into the dead letters (sent at the next attempt, before the write).
                for key in exc.keys:
                    _row, source = batch.rows.pop(key)
                    batch.dead_letters.append(DeadLetter(source, _key_conflict(spec, key)))
                continue
            except psycopg.Error as exc:
                if classify(exc) is not ErrorClass.POISON:
                    raise
                log.warning(
                    "flush of %s refused by the database (%s): isolating the bad rows",
                    spec.name,
                    str(exc).splitlines()[0],
                )
            bad = isolate_poison(spec, list(batch.rows.values()), writer)
            if not bad:
                break
            blamed = {id(d.source) for d in bad}
            batch.rows = {key: entry for key, entry in batch.rows.items() if id(entry[1]) not in blamed}
            batch.dead_letters.extend(bad)
    finally:
        if staged is not None:  # never reached the write (the dead letters failed): roll it back
            staged.discard()
    raise PoisonNotIsolated(f"the database refused a batch of {spec.name} but no single row on its own")


def _key_conflict(spec: TableSpec, key: tuple[str, ...]) -> Rejection:
    *some, last = spec.conflict_columns
    columns = f"{', '.join(some)} or {last}" if some else last
    return Rejection(
        "write",
        "job_key_conflict",
        f"idempotency key {key[-1]!r} already names another job in the database ({columns} differs)",
        spec.conflict_columns[0],
    )
