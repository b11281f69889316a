"""Time-range backfill, the pure part: offsets from the broker's answers, resume positions, pacing.

A backfill re-consumes the records of some topics whose Kafka timestamp is in [from, to), outside
the sink's consumer group, and writes them through the sink's own pipeline. This module decides, from
plain values and a clock, which offsets that is (or why not: before the topic's retention, nothing in
it), where a job resumes, which records of a poll are in the range, how long to wait for a rate
limit, and how far along a job is. I/O lives in control/backfill_jobs.py (the jobs table) and
control/backfill_run.py (the broker, the pipeline).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mds_sink.core.batcher import DeadLetter, TableBatch, TopicPartition
from mds_sink.errors import QueryError


def ms(when: datetime) -> int:
    """A time as Kafka's timestamps give it: milliseconds since the epoch (naive means UTC)."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


def at_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def shown(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """[start, end) in Kafka timestamp milliseconds."""

    start_ms: int
    end_ms: int

    @classmethod
    def of(cls, start: datetime, end: datetime) -> TimeRange:
        window = cls(ms(start), ms(end))
        if window.end_ms <= window.start_ms:
            raise QueryError(f"--to ({shown(end)}) must be after --from ({shown(start)})")
        return window

    def holds(self, timestamp_ms: int) -> bool:
        return self.start_ms <= timestamp_ms < self.end_ms

    def describe(self) -> str:
        return f"[{shown(at_ms(self.start_ms))}, {shown(at_ms(self.end_ms))})"


@dataclass(frozen=True, slots=True)
class PartitionTimes:
    """What the broker said of one partition: its watermarks, the timestamp of its first record still
    kept, and the first offsets at or after the range's two ends (None: no such record yet)."""

    topic: str
    partition: int
    low: int
    high: int
    first_ms: int | None  # None: the partition holds no record
    start_at: int | None
    end_at: int | None


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """The offsets [start, end) of one partition a job reads; it has read up to `next`."""

    topic: str
    partition: int
    start: int
    end: int
    next: int

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def remaining(self) -> int:
        """Offsets still to read (an upper bound on records: compaction and transactions leave gaps)."""
        return max(0, self.end - self.next)

    @property
    def done(self) -> bool:
        return self.next >= self.end


def plan(found: Iterable[PartitionTimes], window: TimeRange) -> list[PartitionRange]:
    """The offsets of the range on every partition; refused if records of it may be gone already.

    A partition whose log starts (low watermark > 0) at a record newer than `from` has deleted older
    ones: some of them may have been in the range, so the job would be incomplete without saying so.
    The refusal names the earliest time from which every partition still has all its records.
    """
    partitions = sorted(found, key=lambda f: (f.topic, f.partition))
    # Evidence only: a partition emptied by retention (low == high > 0) says nothing of when its
    # records were written, and is read as holding none of the range.
    truncated = [f for f in partitions if f.low > 0 and f.first_ms is not None and f.first_ms > window.start_ms]
    if truncated:
        earliest = max(f.first_ms for f in truncated if f.first_ms is not None)
        names = ", ".join(f"{f.topic}[{f.partition}]" for f in truncated[:5])
        more = f" and {len(truncated) - 5} more" if len(truncated) > 5 else ""
        raise QueryError(
            f"--from {shown(at_ms(window.start_ms))} is older than the retention of {names}{more}: records of "
            f"the range were deleted; the earliest time still available is {shown(at_ms(earliest))}"
        )
    out = []
    for f in partitions:
        start = f.high if f.start_at is None else max(f.start_at, f.low)
        end = f.high if f.end_at is None else min(max(f.end_at, start), f.high)
        out.append(PartitionRange(f.topic, f.partition, start, end, start))
    return out


def empty(ranges: Sequence[PartitionRange]) -> bool:
    return all(r.end <= r.start for r in ranges)


def unfinished(ranges: Iterable[PartitionRange]) -> list[PartitionRange]:
    """Where a job resumes: the partitions not read to their end, each from its recorded position."""
    return [r for r in ranges if not r.done]


def lock_key(job_id: uuid.UUID) -> tuple[int, int]:
    """The job's advisory lock key: pg_try_advisory_lock(int4, int4) from 64 bits of its id."""
    raw = job_id.bytes
    return int.from_bytes(raw[:4], "big", signed=True), int.from_bytes(raw[4:8], "big", signed=True)


class RateLimit:
    """Records per second, paced: each record takes 1/rate of a virtual clock that never falls behind
    the real one, so a stall (a slow flush) is not made up for with a burst afterwards."""

    def __init__(self, per_s: float | None, now: float) -> None:
        self._interval = 1.0 / per_s if per_s else 0.0
        self._free = now

    def wait_s(self, records: int, now: float) -> float:
        """How long to wait after consuming `records` at `now`."""
        if not self._interval or records <= 0:
            return 0.0
        self._free = max(self._free, now) + records * self._interval
        return max(0.0, self._free - now)


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the average rate so far; None before anything is done."""
    if done <= 0 or elapsed_s <= 0:
        return None
    return max(0, total - done) / (done / elapsed_s)


def tenant_id(text: str) -> str:
    """A tenant id as the rows carry it (lower-case canonical UUID text)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise QueryError(f"--tenant {text!r} is not a tenant id (a UUID)") from None


def keep_tenant(batch: TableBatch, tenant: str, tenant_of: Callable[[DeadLetter], str | None]) -> int:
    """The batch less every other tenant's rows and dead letters (`tenant_of` reads a refused record's
    tenant, None if it has none readable); returns how many records were dropped. A record of another
    tenant is no concern of this job: it is neither written nor dead-lettered again."""
    at = batch.spec.tenant_index
    before = len(batch.rows) + len(batch.dead_letters)
    batch.rows = {key: entry for key, entry in batch.rows.items() if entry[0][at] == tenant}
    batch.dead_letters = [d for d in batch.dead_letters if tenant_of(d) == tenant]
    return before - len(batch.rows) - len(batch.dead_letters)


@dataclass
class Cut:
    """What a batch of one partition covers, for the job's progress: every record of the partition
    before `next` is in it, in an earlier batch, or was skipped (outside the range, another tenant)."""

    tp: TopicPartition
    next: int
    records: int  # read in the range (skipped ones included)
    skipped: int
    dead_letters: int = 0


@dataclass
class Tally:
    """What a partition has seen since the last batch was cut (the consumer thread's own record)."""

    next: int
    records: int = 0
    skipped: int = 0

    def cut(self, tp: TopicPartition) -> Cut:
        done = Cut(tp, self.next, self.records, self.skipped)
        self.records = self.skipped = 0
        return done


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """A partition of a job as the jobs table records it."""

    topic: str
    partition: int
    start: int
    end: int
    next: int
    records: int
    skipped: int
    rows_changed: int
    rows_unchanged: int
    dead_letters: int

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "start_offset": self.start,
            "end_offset": self.end,
            "next_offset": self.next,
            "records": self.records,
            "skipped": self.skipped,
            "rows_changed": self.rows_changed,
            "rows_unchanged": self.rows_unchanged,
            "dead_letters": self.dead_letters,
        }


STATES = ("planned", "running", "interrupted", "succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class JobReport:
    """A job and its partitions; `state` is `interrupted` for a job recorded as running that no run holds."""

    job_id: str
    topics: tuple[str, ...]
    range_from: datetime
    range_to: datetime
    tenant: str | None
    rate_per_s: float | None
    dry_run: bool
    state: str
    cancel_requested: bool
    requested_by: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    partitions: tuple[PartitionReport, ...] = field(default=())

    @property
    def offsets(self) -> int:
        return sum(p.end - p.start for p in self.partitions)

    @property
    def offsets_done(self) -> int:
        return sum(p.next - p.start for p in self.partitions)

    def totals(self) -> dict[str, int]:
        keys = ("records", "skipped", "rows_changed", "rows_unchanged", "dead_letters")
        return {k: sum(int(getattr(p, k)) for p in self.partitions) for k in keys}

    def as_dict(self, *, partitions: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "job": self.job_id,
            "state": self.state,
            "topics": list(self.topics),
            "from": shown(self.range_from),
            "to": shown(self.range_to),
            "tenant": self.tenant,
            "rate_per_s": self.rate_per_s,
            "dry_run": self.dry_run,
            "cancel_requested": self.cancel_requested,
            "requested_by": self.requested_by,
            "error": self.error,
            "created_at": shown(self.created_at),
            "started_at": None if self.started_at is None else shown(self.started_at),
            "finished_at": None if self.finished_at is None else shown(self.finished_at),
            "progress": {"offsets": self.offsets, "done": self.offsets_done},
            "totals": self.totals(),
        }
        if partitions:
            out["partitions"] = [p.as_dict() for p in self.partitions]
        return out


def describe_totals(totals: Mapping[str, int], *, dry_run: bool) -> str:
    changed = "would change" if dry_run else "rows written"
    return (
        f"{totals['records']:,} records read, {totals['rows_changed']:,} {changed}, "
        f"{totals['rows_unchanged']:,} unchanged, {totals['dead_letters']:,} dead letters"
        + (f", {totals['skipped']:,} skipped" if totals.get("skipped") else "")
    )
