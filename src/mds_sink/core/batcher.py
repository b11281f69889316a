"""Micro-batches per table: dedupe by natural key, flush on max_rows / max_ms / max_bytes.

Pure: the time (`now_ms`) is an argument. A batch also carries the records that were refused
(dead letters to produce) and, per partition, the next offset to commit once the batch is settled
and the epoch under which this member claimed it (the ledger update is fenced on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mds_sink.core.rejection import Rejection
from mds_sink.core.tables import TableSpec
from mds_sink.core.validate import Row

TopicPartition = tuple[str, int]


class Source(NamedTuple):
    """Where a record came from, and the record itself (kept to dead-letter it verbatim).

    A named tuple, not a frozen dataclass: one is made per record, at a third of the cost.
    """

    topic: str
    partition: int
    offset: int
    message: Any = None  # the consumer's message object: key, value, headers, timestamp


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: Source
    rejection: Rejection


@dataclass
class TableBatch:
    spec: TableSpec
    started_ms: float
    rows: dict[tuple[Any, ...], tuple[Row, Source]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    bytes: int = 0
    fence: dict[TopicPartition, int] = field(default_factory=dict)  # partition -> epoch claimed
    # How many of `dead_letters` the broker has acknowledged: a retried flush never sends one twice.
    acknowledged: int = 0

    def _advance(self, source: Source, size: int) -> None:
        self.records += 1
        self.bytes += size
        tp = (source.topic, source.partition)
        if source.offset + 1 > self.next_offsets.get(tp, -1):
            self.next_offsets[tp] = source.offset + 1

    def add(self, row: Row, source: Source, size: int) -> None:
        spec = self.spec
        key = spec.key_of(row)
        held = self.rows.get(key)
        if held is not None:
            if spec.on_conflict == "ignore":
                # An outbox keeps the first request for a key; a repeat in the same batch is the same
                # job, unless it asks for another one under that key.
                at = spec.column_index
                differs = [c for c in spec.conflict_columns if row[at[c]] != held[0][at[c]]]
                if differs:
                    self.reject(source, _conflict(key, differs), size)
                    return
                self._advance(source, size)
                return
            rev = spec.revision_index
            # The newest revision wins, then the latest offset: a late older correction changes nothing.
            if rev is not None and row[rev] < held[0][rev]:
                self._advance(source, size)
                return
        self.rows[key] = (row, source)
        self._advance(source, size)

    def reject(self, source: Source, rejection: Rejection, size: int) -> None:
        self.dead_letters.append(DeadLetter(source, rejection))
        self._advance(source, size)

    @property
    def partitions(self) -> set[TopicPartition]:
        return set(self.next_offsets)

    def without(self, partitions: set[TopicPartition]) -> tuple[TableBatch | None, int]:
        """This batch less the records of `partitions`, or None if nothing is left; and how many went."""
        if not self.partitions & partitions:
            return self, 0
        kept = TableBatch(self.spec, self.started_ms)
        dropped = 0
        for row, source in self.rows.values():
            if (source.topic, source.partition) in partitions:
                dropped += 1
            else:
                kept.add(row, source, 0)
        for dl in self.dead_letters:
            if (dl.source.topic, dl.source.partition) in partitions:
                dropped += 1
            else:
                kept.reject(dl.source, dl.rejection, 0)
        kept.bytes = self.bytes
        kept.next_offsets = {tp: o for tp, o in self.next_offsets.items() if tp not in partitions}
        kept.fence = {tp: e for tp, e in self.fence.items() if tp not in partitions}
        return (kept if kept.records else None), dropped


# How fast the expected write time follows the writes (an exponentially weighted mean).
_LEAD_WEIGHT = 0.2


@dataclass
class Batcher:
    """`max_ms` is a record's budget until its row is committed: a batch is due `lead_ms` before its
    oldest record has waited max_ms, `lead_ms` being what a write takes (`wrote`), at most half of
    max_ms, so that a slow database never turns batching into a flush per record."""

    max_rows: int
    max_ms: int
    max_bytes: int
    batches: dict[str, TableBatch] = field(default_factory=dict)
    lead_ms: float = 0.0

    def wrote(self, seconds: float) -> None:
        """A batch took this long to write: the next ones are due that much earlier (smoothed)."""
        took_ms = min(seconds * 1000, self.max_ms / 2)  # one stalled write moves it a fifth of the cap at most
        self.lead_ms = self.lead_ms + _LEAD_WEIGHT * (took_ms - self.lead_ms) if self.lead_ms else took_ms

    def batch(self, spec: TableSpec, now_ms: float) -> TableBatch:
        current = self.batches.get(spec.name)
        if current is None:
            current = self.batches[spec.name] = TableBatch(spec, now_ms)
        return current

    def is_full(self, table: str) -> bool:
        b = self.batches.get(table)
        return b is not None and (len(b.rows) >= self.max_rows or b.bytes >= self.max_bytes)

    def due(self, now_ms: float) -> list[str]:
        """Tables whose batch must be flushed now: full, or old enough that its write ends by max_ms."""
        wait_ms = self.max_ms - self.lead_ms
        return [
            name
            for name, b in self.batches.items()
            if len(b.rows) >= self.max_rows or b.bytes >= self.max_bytes or now_ms - b.started_ms >= wait_ms
        ]

    def next_deadline_ms(self) -> float | None:
        if not self.batches:
            return None
        return min(b.started_ms for b in self.batches.values()) + self.max_ms - self.lead_ms

    def take(self, table: str) -> TableBatch | None:
        return self.batches.pop(table, None)

    def tables_with(self, partitions: Iterable[TopicPartition]) -> list[str]:
        wanted = set(partitions)
        return [name for name, b in self.batches.items() if b.partitions & wanted]

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget everything buffered for these partitions (lost); returns how many records."""
        wanted = set(partitions)
        dropped = 0
        for name in list(self.batches):
            kept, gone = self.batches[name].without(wanted)
            dropped += gone
            if kept is None:
                del self.batches[name]
            else:
                self.batches[name] = kept
        return dropped

    @property
    def buffered(self) -> int:
        return sum(b.records for b in self.batches.values())


def _conflict(key: tuple[Any, ...], differs: list[str]) -> Rejection:
    verb = "differs" if len(differs) == 1 else "differ"
    return Rejection(
        "validate",
        "job_key_conflict",
        f"idempotency key {key[-1]!r} already requests another job in this batch ({', '.join(differs)} {verb})",
        differs[0],
    )
