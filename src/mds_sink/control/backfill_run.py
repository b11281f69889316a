"""Time-range backfill, the I/O part: plan a job from the broker's time index, and run it.

The command line (`mds-sink backfill`) and the control API (`POST /backfill`) both call `start` and
`run`; nothing else reads the range or writes its rows.

A run consumes the job's partitions with assign() under a group id of its own that never joins or
commits, so the live group's offsets never move; each record goes through the sink's pipeline
(sink.pipeline.Ingest: decode, validate, dedupe; sink.flusher.Flusher: settle in order, transient
failures retried; dead letters with their headers, the idempotent monotonic upsert). Batches are cut
per partition, and each flush moves that partition's position in the jobs table in its own
transaction (Writer.write's `also`), so a killed run resumes exactly after its last committed batch,
and a run twice changes no row.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from psycopg_pool import ConnectionPool

from mds_sink.avro.codec import Decoder, load_schema_file
from mds_sink.avro.sources import open_schema_source
from mds_sink.config.settings import Settings
from mds_sink.control import backfill_jobs as jobs
from mds_sink.control.backfill import (
    Cut,
    JobReport,
    PartitionRange,
    PartitionTimes,
    RateLimit,
    Tally,
    TimeRange,
    empty,
    keep_tenant,
    plan,
    tenant_id,
    unfinished,
)
from mds_sink.core.batcher import Batcher, DeadLetter, TableBatch, TopicPartition
from mds_sink.core.catalog import TABLES
from mds_sink.core.tables import TableSpec
from mds_sink.core.validate import Row, Rules, TenantSet
from mds_sink.db import jobs as sql
from mds_sink.db.classify import classify
from mds_sink.db.dsn import unreachable
from mds_sink.db.writer import Also, Staged, Writer, WriteResult, database_pool
from mds_sink.errors import BrokerUnavailable, ErrorClass, OwnershipLost, QueryError, StartupError
from mds_sink.kafka.clients import DeadLetterProducer, consumer_config, error_line, producer_config
from mds_sink.sink.control import SinkState
from mds_sink.sink.deadletters import DeadLetters, rejected
from mds_sink.sink.flusher import Flusher, FlushFailed
from mds_sink.sink.pipeline import Ingest, Settled, isolate_poison, settle

log = logging.getLogger(__name__)

KAFKA_TIMEOUT_S = 15.0
POLL_S = 0.2
CONSUME_MAX = 1000
# How often a run asks the jobs table whether it was cancelled (or taken over) between its batches.
CANCEL_CHECK_S = 1.0
# How long a cancelled or stopped run waits for the batch being written before it lets go.
DRAIN_S = 30.0


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    topics: tuple[str, ...]
    start: datetime
    end: datetime
    tenant: str | None = None
    rate_per_s: float | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Planned:
    """A job created, or None with the reason there is nothing to do (an empty range)."""

    job: JobReport | None
    message: str


def group_of(settings: Settings, job_id: uuid.UUID | str) -> str:
    """The group id a job's consumer and dead letters carry: never the live group's, never joined."""
    return f"{settings.kafka.group_id}.backfill.{job_id}"


@contextmanager
def writer_connection(settings: Settings) -> Iterator[jobs.Connection]:
    url = settings.database.url.get_secret_value()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(settings.database.connect_timeout_s)))
    except psycopg.OperationalError as exc:
        raise StartupError(unreachable(url, exc) or error_line(exc)) from None
    with conn:
        yield conn


# -- planning -------------------------------------------------------------------------------------
def partition_times(settings: Settings, topics: tuple[str, ...], window: TimeRange) -> list[PartitionTimes]:
    """Watermarks, first kept timestamp and the offsets at both ends of the range, for every partition."""
    probe = Consumer({**consumer_config(settings), "group.id": f"{settings.kafka.group_id}.backfill-plan"})
    try:
        metadata = probe.list_topics(timeout=KAFKA_TIMEOUT_S)
        tps: list[TopicPartition] = []
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise QueryError(f"topic {topic!r} does not exist on {settings.kafka.bootstrap_servers}")
            tps += [(topic, p) for p in sorted(found.partitions)]
        marks = {tp: probe.get_watermark_offsets(KafkaTopicPartition(*tp), timeout=KAFKA_TIMEOUT_S) for tp in tps}
        starts = _offsets_at(probe, tps, window.start_ms)
        ends = _offsets_at(probe, tps, window.end_ms)
        firsts = _first_timestamps(probe, {tp: low for tp, (low, high) in marks.items() if 0 < low < high})
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {settings.kafka.bootstrap_servers}: {error_line(exc)}"
        ) from None
    finally:
        probe.close()
    return [
        PartitionTimes(t, p, marks[(t, p)][0], marks[(t, p)][1], firsts.get((t, p)), starts[(t, p)], ends[(t, p)])
        for t, p in tps
    ]


def _offsets_at(probe: Consumer, tps: list[TopicPartition], at_ms: int) -> dict[TopicPartition, int | None]:
    """The broker's time index: the first offset whose timestamp is at or after `at_ms` (None: none yet)."""
    found = probe.offsets_for_times([KafkaTopicPartition(t, p, at_ms) for t, p in tps], timeout=KAFKA_TIMEOUT_S)
    out: dict[TopicPartition, int | None] = {}
    for tp in found:
        if tp.error is not None:
            raise BrokerUnavailable(f"{tp.topic}[{tp.partition}]: {tp.error.str()}")
        out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    return out


def _first_timestamps(probe: Consumer, lows: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """The timestamp of the first record still kept, of partitions whose log was truncated."""
    if not lows:
        return {}
    probe.assign([KafkaTopicPartition(t, p, low) for (t, p), low in lows.items()])
    wanted, found = set(lows), dict[TopicPartition, int]()
    deadline = time.monotonic() + KAFKA_TIMEOUT_S
    while wanted - set(found):
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"no record read at the start of {sorted(wanted - set(found))}")
        for msg in probe.consume(100, timeout=POLL_S):
            topic, partition = msg.topic(), msg.partition()
            if msg.error() is None and topic is not None and partition is not None:
                found.setdefault((topic, partition), msg.timestamp()[1])
    probe.unassign()
    return found


def start(settings: Settings, request: BackfillRequest, *, requested_by: str) -> Planned:
    """Check the request, read the range's offsets, and record the job (not yet run)."""
    window = TimeRange.of(request.start, request.end)
    routes = settings.topics.table_by_topic()
    unknown = [t for t in request.topics if t not in routes]
    if not request.topics or unknown:
        raise QueryError(
            f"--topic {unknown[0] if unknown else ''!r}: not a topic this sink consumes; consumed: "
            f"{', '.join(sorted(routes))}"
        )
    if request.rate_per_s is not None and request.rate_per_s <= 0:
        raise QueryError("--rate must be a positive number of records per second")
    topics = tuple(dict.fromkeys(request.topics))
    tenant = None if request.tenant is None else tenant_id(request.tenant)
    with writer_connection(settings) as conn:
        if tenant is not None:
            known = conn.execute("SELECT active FROM tenants WHERE tenant_id = %s", (tenant,)).fetchone()
            if known is None:
                raise QueryError(f"--tenant {tenant}: no such tenant")
        ranges = plan(partition_times(settings, topics, window), window)
        if empty(ranges):
            return Planned(None, f"nothing to backfill: no record of {', '.join(topics)} in {window.describe()}")
        job_id = uuid.uuid4()
        jobs.create(
            conn,
            job_id=job_id,
            topics=topics,
            range_from=request.start,
            range_to=request.end,
            tenant=tenant,
            rate_per_s=request.rate_per_s,
            dry_run=request.dry_run,
            requested_by=requested_by,
            ranges=ranges,
        )
        return Planned(jobs.load(conn, job_id), "")


# -- running --------------------------------------------------------------------------------------
class _JobWriter:
    """The sink's Writer for one batch of one partition: the job's position and counts move in the
    flush's own transaction, in place of the group's ledger (which a backfill never touches)."""

    def __init__(self, run: _Run, cut: Cut, batch: TableBatch) -> None:
        self._run, self._cut, self._batch = run, cut, batch

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
    ) -> WriteResult:
        # No gap watch here (settle gets none): the live sink's re-count closes what this fills.
        del after
        run, cut = self._run, self._cut
        if not commit:  # the pipeline's probes, isolating a refused row: nothing of them commits
            return run.writer.write(spec, rows, {}, commit=False, staged=staged)
        params = {
            "job": run.job_id,
            "runner": run.runner,
            "topic": cut.tp[0],
            "partition": cut.tp[1],
            "next": cut.next,
            "records": cut.records,
            "skipped": cut.skipped,
            "staged": len(rows),
            "dead": len(self._batch.dead_letters),
            "targets": run.targets[spec.name],
        }
        result = run.writer.write(
            spec,
            rows,
            {},
            staged=staged,
            also=Also(sql.ADVANCE_WITH_FLUSH, params, self._check, first=sql.CHANGED_BEFORE),
        )
        run.batch_settled(cut, int(result.also[0][0]), bool(result.also[0][2]))
        return result

    def _check(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows or not rows[0][1]:
            raise OwnershipLost(f"backfill job {self._run.job_id} was resumed by another run: this batch rolls back")


@dataclass
class _Run:
    settings: Settings
    job: JobReport
    runner: uuid.UUID
    lock: jobs.Connection  # the session holding the job's lock; also asked for cancellation
    cancel: threading.Event
    stop: threading.Event
    on_read: Callable[[int], None]
    writer: Writer = field(init=False)
    pool: ConnectionPool = field(init=False)
    targets: dict[str, list[str]] = field(init=False)
    cancel_seen: bool = False
    _cuts: dict[int, Cut] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def job_id(self) -> uuid.UUID:
        return uuid.UUID(self.job.job_id)

    def batch_settled(self, cut: Cut, changed: int, cancel: bool) -> None:
        """On the flush thread: a batch committed (its counts are in the jobs table)."""
        if cancel:
            self.cancel_seen = True
        log.debug("backfill %s: %s[%d] up to %d, %d rows changed", self.job_id, *cut.tp, cut.next, changed)

    def run(self) -> str:
        """Read and write the unfinished partitions; returns the job's final state."""
        ranges = unfinished([PartitionRange(p.topic, p.partition, p.start, p.end, p.next) for p in self.job.partitions])
        if not ranges:
            return "succeeded"
        s = self.settings
        routes_all = s.topics.table_by_topic()
        gone = sorted({r.topic for r in ranges} - set(routes_all))
        if gone:
            raise QueryError(f"topic {gone[0]!r} is no longer consumed by this sink's settings")
        routes = {topic: TABLES[routes_all[topic]] for topic in {r.topic for r in ranges}}
        self.targets = {spec.name: [f"public.{t.table}" for t in spec.physical] for spec in routes.values()}
        with ExitStack() as stack:
            pool = database_pool(s.database, min_size=1, max_size=2, name="mds-sink-backfill")
            stack.callback(pool.close)
            pool.open(wait=True, timeout=s.database.connect_timeout_s + 1)
            self.pool = pool
            self.writer = Writer(pool, group_of(s, self.job_id))
            schemas = open_schema_source(s, s.schemas)
            stack.callback(schemas.close)
            decoders = {
                spec.name: Decoder(load_schema_file(s.schemas / f"{spec.record}.avsc"), schemas)
                for spec in routes.values()
            }
            rules = s.validation.rules(TenantSet(self.writer.tenants()), now_us=int(time.time() * 1e6))
            if self.job.dry_run:
                flusher = Flusher(self._probe, retry=s.retry, state=SinkState())
            else:
                group = group_of(s, self.job_id)
                producer = DeadLetterProducer(Producer(producer_config(s)))
                stack.callback(producer.close)
                # The dead letters name the job's group: an operator tells them from the live sink's.
                tagged = s.model_copy(update={"kafka": s.kafka.model_copy(update={"group_id": group})})
                dead_letters = DeadLetters(producer, tagged)

                def write(batch: TableBatch, ahead: Staged | None) -> Settled:
                    # Called again for each retry of the batch: its cut is let go once it settled.
                    done = settle(batch, _JobWriter(self, self._cuts[id(batch)], batch), dead_letters.send, ahead=ahead)
                    self._cuts.pop(id(batch), None)
                    return done

                # As the worker does: a batch's COPY begins while the one before is written (a second
                # connection of the run's pool).
                flusher = Flusher(
                    write,
                    retry=s.retry,
                    state=SinkState(),
                    prepare=lambda b: self.writer.stage(b.spec, [row for row, _ in b.rows.values()]),
                )
            stack.callback(flusher.close)
            consumer = Consumer(
                {
                    **consumer_config(s),
                    "group.id": group_of(s, self.job_id),
                    "enable.partition.eof": True,
                    # Records of the range deleted while it runs: an error, not a silent jump.
                    "auto.offset.reset": "error",
                }
            )
            stack.callback(consumer.close)
            consumer.assign([KafkaTopicPartition(r.topic, r.partition, r.next) for r in ranges])
            return _Loop(self, consumer, flusher, routes, decoders, rules, ranges).run()
        raise AssertionError("unreachable")

    def _probe(self, batch: TableBatch, ahead: Staged | None) -> Settled:
        """A dry run's settle: the write probed and rolled back; only the counts are recorded."""
        cut = self._cuts[id(batch)]
        spec, entries = batch.spec, list(batch.rows.values())
        bad: list[DeadLetter] = []
        counted = Also(sql.CHANGED_ROWS, {"targets": self.targets[spec.name]}, first=sql.CHANGED_BEFORE)
        try:
            probe = self.writer.write(spec, [r for r, _ in entries], {}, commit=False, staged=ahead, also=counted)
            changed = int(probe.also[0][0])
        except psycopg.Error as exc:
            if classify(exc) is not ErrorClass.POISON:
                raise  # retried by the flusher, as a write is
            bad = isolate_poison(spec, entries, self.writer)
            blamed = {id(d.source) for d in bad}
            kept = [row for row, source in entries if id(source) not in blamed]
            changed = int(self.writer.write(spec, kept, {}, commit=False, also=counted).also[0][0])
        dead = len(batch.dead_letters) + len(bad)
        params = {
            "job": self.job_id,
            "runner": self.runner,
            "topic": cut.tp[0],
            "partition": cut.tp[1],
            "next": cut.next,
            "records": cut.records,
            "skipped": cut.skipped,
            "staged": len(entries) - len(bad),
            "dead": dead,
            "changed": changed,
        }
        with self.writer_connection() as conn:
            found = conn.execute(sql.ADVANCE_COUNTED, params).fetchone()
        if found is None or not found[1]:
            raise OwnershipLost(f"backfill job {self.job_id} was resumed by another run")
        self.batch_settled(cut, changed, bool(found[2]))
        self._cuts.pop(id(batch), None)
        return Settled(spec.name, len(entries) - len(bad), [*batch.dead_letters, *bad], {})

    @contextmanager
    def writer_connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection() as conn:
            yield conn

    def record_rest(self, tallies: Mapping[TopicPartition, Tally]) -> None:
        """Records read after the last batch of a partition and skipped (none written): their position."""
        for tp, tally in sorted(tallies.items()):
            if not tally.records:
                continue
            cut = tally.cut(tp)
            params = {
                "job": self.job_id,
                "runner": self.runner,
                "topic": tp[0],
                "partition": tp[1],
                "next": cut.next,
                "records": cut.records,
                "skipped": cut.skipped,
                "staged": 0,
                "dead": 0,
                "changed": 0,
            }
            with self.writer_connection() as conn:
                found = conn.execute(sql.ADVANCE_COUNTED, params).fetchone()
            if found is None or not found[1]:
                raise OwnershipLost(f"backfill job {self.job_id} was resumed by another run")

    def submit(self, flusher: Flusher, batch: TableBatch, cut: Cut) -> None:
        self._cuts[id(batch)] = cut
        flusher.submit(batch)


class _Loop:
    """The consumer loop of a run: poll, keep what is in the range, ingest, cut per partition, submit."""

    def __init__(
        self,
        run: _Run,
        consumer: Consumer,
        flusher: Flusher,
        routes: Mapping[str, TableSpec],
        decoders: Mapping[str, Decoder],
        rules: Rules,
        ranges: list[PartitionRange],
    ) -> None:
        self.run_, self.consumer, self.flusher, self.rules = run, consumer, flusher, rules
        self.decoders = decoders
        self.window = TimeRange.of(run.job.range_from, run.job.range_to)
        self.tenant = run.job.tenant
        self.ranges = {r.tp: r for r in ranges}
        self.tallies = {r.tp: Tally(r.next) for r in ranges}
        self.active = set(self.ranges)
        s = run.settings
        # One Ingest (and Batcher) per partition: a batch covers one partition, so its flush moves one
        # position and its counts are that partition's.
        self.ingests = {
            tp: Ingest(
                {tp[0]: routes[tp[0]]},
                decoders,
                rules,
                Batcher(s.batching.max_rows, s.batching.max_ms, s.batching.max_bytes),
            )
            for tp in self.ranges
        }
        rate = run.job.rate_per_s
        self.limit = RateLimit(rate, time.monotonic())
        self.chunk = CONSUME_MAX if not rate else max(1, min(CONSUME_MAX, int(rate // 5)))
        self.failed: BaseException | None = None

    def run(self) -> str:
        run = self.run_
        next_check = time.monotonic() + CANCEL_CHECK_S
        while self.active and self.failed is None:
            if self._stopping():
                break
            self._poll()
            now = time.monotonic()
            self._cut_due(now * 1000)
            self._collect()
            if now >= next_check:
                next_check = now + CANCEL_CHECK_S
                cancel, ours = jobs.cancel_requested(run.lock, run.job_id, run.runner)
                if not ours:
                    raise OwnershipLost(f"backfill job {run.job_id} was resumed by another run")
                run.cancel_seen = run.cancel_seen or cancel
        if self.failed is None and not self._stopping():
            self._cut_due(float("inf"), everything=True)
            deadline = None
        else:
            deadline = time.monotonic() + DRAIN_S
        self._drain(deadline)
        if self.failed is not None:
            raise self.failed
        if run.cancel.is_set() or run.cancel_seen:
            return "cancelled"
        if run.stop.is_set():
            return "interrupted"
        run.record_rest(self.tallies)
        return "succeeded"

    def _stopping(self) -> bool:
        r = self.run_
        return r.cancel.is_set() or r.cancel_seen or r.stop.is_set()

    def _poll(self) -> None:
        msgs = self.consumer.consume(self.chunk, timeout=POLL_S)
        self.rules.now_us = int(time.time() * 1e6)
        now_ms = time.monotonic() * 1000
        kept: dict[TopicPartition, list[Any]] = {}
        read = 0
        for msg in msgs:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None  # set on records and EOF
            tp = (topic, partition)
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._reached(tp, offset)
                    continue
                raise BrokerUnavailable(f"{topic}[{partition}]: {error.str()}")
            if tp not in self.active:
                continue
            end = self.ranges[tp].end
            if offset >= end:
                self._reached(tp, offset)
                continue
            tally = self.tallies[tp]
            tally.next, tally.records = offset + 1, tally.records + 1
            read += 1
            if not self.window.holds(msg.timestamp()[1]):
                tally.skipped += 1  # in the offsets of the range, but written outside it (out of order)
                continue
            kept.setdefault(tp, []).append(msg)
            if tally.next >= end:
                self._reached(tp, tally.next)
        for tp, part in kept.items():
            self.ingests[tp].add_all(part, now_ms)
        if read:
            self.run_.on_read(read)
            wait = self.limit.wait_s(read, time.monotonic())
            if wait > 0:
                self.run_.cancel.wait(wait)

    def _reached(self, tp: TopicPartition, offset: int) -> None:
        """The partition's log is read up to `offset`: done once that is the range's end."""
        if tp in self.active and offset >= self.ranges[tp].end:
            tally = self.tallies[tp]
            tally.next = max(tally.next, self.ranges[tp].end)
            self.active.discard(tp)
            self.consumer.pause([KafkaTopicPartition(*tp)])

    def _cut_due(self, now_ms: float, *, everything: bool = False) -> None:
        for tp, ingest in self.ingests.items():
            batcher = ingest.batcher
            if not batcher.batches:
                continue
            if not (everything or tp not in self.active or batcher.due(now_ms)):
                continue
            for table in list(batcher.batches):
                batch = batcher.take(table)
                if batch is None:
                    continue
                cut = self.tallies[tp].cut(tp)
                if self.tenant is not None:
                    cut.skipped += keep_tenant(batch, self.tenant, self._tenant_of)
                if not self.run_.job.dry_run:
                    for dead in batch.dead_letters:
                        rejected(dead)
                self.run_.submit(self.flusher, batch, cut)
                self._collect()

    def _tenant_of(self, dead: DeadLetter) -> str | None:
        spec = self.ingests[(dead.source.topic, dead.source.partition)].routes[dead.source.topic]
        try:
            value = dead.source.message.value() if dead.source.message is not None else None
            raw = self.decoders[spec.name].decode(value).get("tenant_id")
            return tenant_id(str(raw)) if raw is not None else None
        except Exception:  # undecodable, or no tenant: not provably this tenant's record
            return None

    def _collect(self, timeout_s: float = 0.0) -> None:
        for done in self.flusher.collect(timeout_s):
            if isinstance(done, FlushFailed) and self.failed is None:
                self.failed = done.error

    def _drain(self, deadline: float | None) -> None:
        """Wait for every batch submitted (or, cancelled or stopped, at most until `deadline`)."""
        while self.flusher.pending:
            if deadline is not None and time.monotonic() > deadline:
                log.warning(
                    "backfill %s: a batch still being written after %.0fs; letting go", self.run_.job_id, DRAIN_S
                )
                return
            self._collect(0.1)


def run(
    settings: Settings,
    job_id: uuid.UUID,
    *,
    cancel: threading.Event | None = None,
    stop: threading.Event | None = None,
    on_read: Callable[[int], None] = lambda _n: None,
) -> JobReport:
    """Run (or resume) a job to its end; returns it as the jobs table then shows it.

    `cancel` ends it as cancelled (so does `DELETE /backfill/{job}` or `mds-sink backfill cancel`, from
    any process); `stop` lets go of it unfinished (the process is shutting down): it shows as
    interrupted and resumes where it stopped. A failure is recorded on the job and raised.
    """
    url = settings.database.url.get_secret_value()
    runner = uuid.uuid4()
    try:
        with jobs.locked(url, job_id, connect_timeout_s=settings.database.connect_timeout_s) as lock:
            jobs.claim(lock, job_id, runner)
            job = jobs.load(lock, job_id)
            state = "failed"
            try:
                state = _Run(
                    settings, job, runner, lock, cancel or threading.Event(), stop or threading.Event(), on_read
                ).run()
            except (KeyboardInterrupt, SystemExit):
                state = "interrupted"
                raise
            except Exception as exc:
                jobs.finish(lock, job_id, runner, "failed", error_line(exc))
                raise
            finally:
                if state == "interrupted":
                    log.warning("backfill %s interrupted: resume it with `mds-sink backfill resume %s`", job_id, job_id)
            if state != "interrupted":
                jobs.finish(lock, job_id, runner, state)
            return jobs.load(lock, job_id)
    except psycopg.OperationalError as exc:
        raise StartupError(unreachable(url, exc) or error_line(exc)) from None
