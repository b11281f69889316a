"""The consumer loop: the only place that sequences I/O (poll, hand batches to the flusher, commit).

Ownership: each partition assigned is claimed in the offsets ledger (a new epoch) before any of its
records is consumed; every flush writes under that epoch, so a member that lost a partition cannot
write it. A partition revoked is drained (or, past the deadline, given up), and nothing of it stays
buffered. A flush that failed for good stops the sink: nothing after it commits, the rebalance on the
way out drains nothing, and a restart re-delivers from the failed batch.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # exported, not in stubs
from psycopg_pool import ConnectionPool

from mds_sink import __version__, metrics
from mds_sink.avro.codec import Decoder, SchemaSource, load_schema_file
from mds_sink.avro.sources import open_schema_source
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import Settings
from mds_sink.core import deadletter
from mds_sink.core.batcher import Batcher, DeadLetter, TableBatch, TopicPartition
from mds_sink.core.catalog import TABLES
from mds_sink.core.fencing import resume_offset
from mds_sink.core.validate import Rules, TenantSet
from mds_sink.db.preflight import check_database
from mds_sink.db.writer import Claim, Staged, Writer, database_pool
from mds_sink.errors import BrokerUnavailable, SinkFailed, StartupError
from mds_sink.kafka.clients import (
    DeadLetterProducer,
    admin_config,
    consumer_config,
    dlq_topic_config,
    ensure_topics,
    partition_counts,
    producer_config,
)
from mds_sink.sink.flusher import Abandoned, Done, Flusher, FlushFailed
from mds_sink.sink.gc_tuning import tune_for_throughput
from mds_sink.sink.health import DatabaseProbe
from mds_sink.sink.pipeline import Ingest, Settled, settle
from mds_sink.sink.state import SinkState, StatusSnapshot
from mds_sink.sink.tenants import TenantRefresher

log = logging.getLogger(__name__)

CONSUME_BATCH = 1000
# A database slower than decoding: wait this long for the flusher before pausing the partitions.
# A pause drops every record librdkafka has prefetched for them, fetched again on resume, so short
# waits cost less than a pause; still far below max.poll.interval.ms, and rebalances wait at most this.
FLUSHER_WAIT_S = 1.0
# While a flush is in flight, poll in slices this short: its commit follows within this much.
SETTLED_POLL_S = 0.005
# The broker's answer in a rebalance callback: past this, the ledger alone says where to resume.
COMMITTED_TIMEOUT_S = 10.0
# A paused partition is not fetched, so its cached high watermark stands still: ask the broker this often.
PAUSED_END_OFFSETS_S = 5.0
# How often the status snapshot is published while nothing else changed (the buffered count moves).
PUBLISH_EVERY_S = 0.1


def _names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps))


class Worker:
    def __init__(self, settings: Settings, *, state: SinkState | None = None) -> None:
        self.settings = settings
        self.state = state or SinkState()
        self.stopping = threading.Event()
        self.routes = {topic: TABLES[table] for topic, table in settings.topics.table_by_topic().items()}
        # Everything below is the consumer thread's own; other threads read state.snapshot.
        self._assignment: set[TopicPartition] = set()
        self._epochs: dict[TopicPartition, int] = {}  # partition -> epoch claimed in the ledger
        self._unclaimed: set[TopicPartition] = set()  # assigned, kept paused until its claim succeeds
        self._lost: set[TopicPartition] = set()
        self._client_paused: set[TopicPartition] = set()  # paused at the client now, for any reason
        self._backpressure = False  # every assigned partition is paused: the buffer is full
        self._operator_pauses: set[TopicPartition] = set()  # paused through the admin API until resumed
        self._committed: dict[TopicPartition, int] = {}
        self._end_offsets: dict[TopicPartition, int] = {}
        self._end_offset_requests: dict[KafkaTopicPartition, Future[Any]] = {}
        self._newest_event_us: dict[str, int] = {}
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._flush_requested = False
        self._gauges_at = 0.0
        self._ends_at = 0.0
        self._published_at = 0.0
        self._claim_retry_at = 0.0
        self._uncommitted: dict[TopicPartition, int] = {}  # offsets whose Kafka commit failed, to retry
        self._commit_retry_at = 0.0
        # False once a flush failed or a drain was given up: no drain or commit may follow.
        self._settling = True
        self._resources = contextlib.ExitStack()  # closed in reverse order of opening

    # -- start-up -------------------------------------------------------------------------------
    def _closing(self, name: str, close: Callable[[], Any]) -> None:
        """Close this when the worker stops (in reverse order), logging instead of raising."""

        def quietly() -> None:
            try:
                close()
            except Exception as exc:
                log.warning("%s close: %s", name, exc)

        self._resources.callback(quietly)

    def _open(self) -> None:
        s = self.settings
        self.pool: ConnectionPool = database_pool(
            s.database, min_size=s.database.pool_min_size, max_size=s.database.pool_max_size, name="mds-sink"
        )
        self._closing("pool", self.pool.close)
        self.state.schema_revision = check_database(s, self.pool)
        self.state.database_ok = True
        self.writer = Writer(self.pool, s.kafka.group_id)

        self.admin = AdminClient(admin_config(s))
        try:
            counts = partition_counts(self.admin, self.routes)
        except BrokerUnavailable as exc:
            raise StartupError(f"cannot reach the broker at {s.kafka.bootstrap_servers}: {exc}") from None
        table_topics = {topic: table for table, topic in s.topics.model_dump().items()}
        for topic in self.routes:
            if topic not in counts:
                raise StartupError(
                    f"topic {topic!r} (setting topics.{table_topics.get(topic, '?')}) does not exist on "
                    f"{s.kafka.bootstrap_servers}"
                )
        dlq_topics = {deadletter.dead_letter_topic(s.topics.dead_letter, t): 1 for t in self.routes}
        for created in ensure_topics(self.admin, dlq_topics, dlq_topic_config()):
            log.info("created dead-letter topic %s", created)

        schemas_dir = s.schemas_dir or resource_dir("schemas")
        source: SchemaSource = open_schema_source(s, schemas_dir)
        self._closing("schema source", source.close)
        self.schema_source = source
        self.decoders = {
            spec.name: Decoder(load_schema_file(schemas_dir / f"{spec.record}.avsc"), source)
            for spec in self.routes.values()
        }
        self.tenants = TenantSet()
        self.refresher = TenantRefresher(self.writer.tenants, self.tenants, s.validation.tenant_refresh_s)
        self.refresher.refresh()
        self.tenants.on_miss = self.refresher.reload_on_miss
        self.rules = Rules(
            self.tenants,
            now_us=int(time.time() * 1e6),
            max_future_skew_us=s.validation.max_future_skew_s * 1_000_000,
            symbol_max_length=s.validation.symbol_max_length,
        )
        self.batcher = Batcher(s.batching.max_rows, s.batching.max_ms, s.batching.max_bytes)
        self.ingest = Ingest(self.routes, self.decoders, self.rules, self.batcher, on_reject=self._rejected)
        self.dlq = DeadLetterProducer(Producer(producer_config(s)))
        self._closing("dead-letter producer", self.dlq.close)
        self.flusher = Flusher(
            lambda b, ahead: settle(b, self.writer, self._send_dead_letters, ahead=ahead),
            retry=s.retry,
            state=self.state,
            # Beginning the next flush ahead holds a second connection: never the pool's last one.
            prepare=self._stage_ahead if s.database.pool_max_size >= 2 else None,
        )
        self._closing("flusher", self.flusher.close)
        self.probe = DatabaseProbe(s.database, self.state)
        self.consumer = Consumer(consumer_config(s))
        # Closing leaves the group; the revocation it runs drains only what may still settle.
        self._closing("consumer", self.consumer.close)

    def _stage_ahead(self, batch: TableBatch) -> Staged:
        """On the stager thread: the batch's transaction begun and its rows COPYed, while the one before is written."""
        return self.writer.stage(batch.spec, [row for row, _ in batch.rows.values()])

    def _send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        now = datetime.now(UTC)
        records = [
            deadletter.build(
                d,
                topic_pattern=self.settings.topics.dead_letter,
                group=self.settings.kafka.group_id,
                version=__version__,
                now=now,
            )
            for d in dead
        ]
        self.dlq.send(records, timeout_s=30.0)
        for d in dead:
            if d.rejection.stage == "write":
                self._rejected(d)

    def _rejected(self, d: DeadLetter) -> None:
        metrics.DEAD_LETTERS.labels(d.source.topic, d.rejection.stage, d.rejection.code).inc()
        log.warning(
            "dead letter: %s",
            d.rejection.describe(),
            extra={
                "topic": d.source.topic,
                "partition": d.source.partition,
                "offset": d.source.offset,
                "reason": d.rejection.code,
                "stage": d.rejection.stage,
            },
        )

    # -- ownership ------------------------------------------------------------------------------
    def _claim(self, tps: Iterable[TopicPartition], *, attempts: int) -> dict[TopicPartition, Claim]:
        """A new ledger epoch for each partition; {} if the database did not answer (claimed later)."""
        wait_s = self.settings.database.connect_timeout_s
        for attempt in range(attempts):
            try:
                return self.writer.claim(tps, pool_wait_s=wait_s)
            except Exception as exc:
                log.warning("cannot claim %s in the offsets ledger (attempt %d): %s", _names(tps), attempt + 1, exc)
                if attempt + 1 < attempts:
                    time.sleep(min(2.0**attempt, 5.0))
        return {}

    def _committed_offsets(self, partitions: list[KafkaTopicPartition]) -> dict[TopicPartition, int]:
        """Kafka's committed offsets (absent: none); {} with a warning if the broker does not answer."""
        try:
            found = self.consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("committed offsets unavailable (%s): resuming from the offsets ledger", exc)
            return {}
        return {(p.topic, p.partition): p.offset for p in found if p.offset >= 0}

    def _owned(self, tp: TopicPartition, claim: Claim, committed: int | None) -> int | None:
        """Record a claim; returns the offset to resume from if the ledger is ahead of Kafka."""
        self._epochs[tp] = claim.epoch
        self._unclaimed.discard(tp)
        return resume_offset(claim.next_offset, committed)

    def _claim_pending(self, now: float) -> None:
        """Claim what the rebalance callback could not (the database was away), at most once a second."""
        if not self._unclaimed or now - self._claim_retry_at < 1.0:
            return
        self._claim_retry_at = now
        claims = self._claim(self._unclaimed, attempts=1)
        healed = []
        for tp, claim in claims.items():
            offset = self._owned(tp, claim, self._committed.get(tp))
            if offset is not None:
                healed.append(KafkaTopicPartition(tp[0], tp[1], offset))
        for at in healed:
            try:  # paused since assigned, so nothing of it was consumed: resume where the rows end
                self.consumer.seek(at)
            except KafkaException as exc:  # re-delivery from Kafka's offset is idempotent
                log.info("could not seek %s[%d] to %d: %s", at.topic, at.partition, at.offset, exc)
        if claims:
            log.info("claimed %s", _names(claims))
            self.flusher.own(self._epochs)
            self._commit_offsets(healed)
            self._apply_pauses()

    # -- rebalances -----------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        metrics.REBALANCES.labels("assign").inc()
        self._lost.difference_update(tps)
        claims = self._claim(tps, attempts=2)
        committed = self._committed_offsets(partitions)
        healed: list[KafkaTopicPartition] = []
        for p in partitions:
            tp = (p.topic, p.partition)
            if tp in committed:
                self._committed[tp] = committed[tp]
            claim = claims.get(tp)
            if claim is None:
                self._unclaimed.add(tp)  # paused below until claimed: nothing is read that could not be written
                continue
            offset = self._owned(tp, claim, committed.get(tp))
            # A crash between the database commit and the Kafka commit: the ledger is ahead.
            if offset is not None:
                p.offset = offset
                healed.append(KafkaTopicPartition(p.topic, p.partition, offset))
                log.info(
                    "resuming from the offsets ledger at %d (Kafka had %s)",
                    offset,
                    committed.get(tp, "none"),
                    extra={"topic": p.topic, "partition": p.partition},
                )
        if self.settings.kafka.assignment_strategy == "cooperative-sticky":
            consumer.incremental_assign(partitions)
        else:  # an eager rebalance revoked everything first: this is the whole new assignment
            consumer.assign(partitions)
        self._assignment.update(tps)
        self.flusher.own(self._epochs)
        self.state.joined = True
        if healed:
            # Those rows are in the database: Kafka catches up now, not at the next flush (there may be none).
            self._commit_offsets(healed)
        self._apply_pauses()
        held = self._operator_pauses.intersection(tps)
        if held:
            log.warning("paused by operator before, paused again: %s", _names(held))
        log.info("assigned %s", _names(tps))
        self._publish()

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        metrics.REBALANCES.labels("revoke").inc()
        self.state.revocations += 1
        log.info("revoked %s", _names(tps))
        try:
            deadline_s = self.settings.shutdown_deadline_s
            if (
                self._settling
                and tps & self._assignment
                and not self._drain(self.batcher.tables_with(tps), deadline_s=deadline_s)
            ):
                log.error("revoked partitions not drained in time: their records will be re-delivered")
        finally:
            self._give_up(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        metrics.REBALANCES.labels("lost").inc()
        self.state.revocations += 1
        self._lost.update(tps)
        dropped = self._give_up(tps)
        log.warning("partitions lost: %s; dropped %d buffered records, nothing committed", _names(tps), dropped)

    def _give_up(self, tps: set[TopicPartition]) -> int:
        """Partitions that moved away: nothing of them stays buffered, queued, paused or reported."""
        dropped = self.batcher.drop(tps)
        paused = self._client_paused & tps
        if paused:
            # The client keeps a partition's pause across an unassign: were it assigned here again, it
            # would stay paused with nothing saying so.
            with contextlib.suppress(KafkaException):
                self.consumer.resume([KafkaTopicPartition(t, p) for t, p in paused])
            self._client_paused -= paused
        self._assignment -= tps
        self._unclaimed -= tps
        for tp in tps:
            self._epochs.pop(tp, None)
            self._uncommitted.pop(tp, None)
            self._committed.pop(tp, None)
            self._end_offsets.pop(tp, None)
            with contextlib.suppress(KeyError):  # no series yet for a partition that never reported
                metrics.LAG.remove(tp[0], str(tp[1]))
        # Batches queued for the flusher lose these partitions' records; the one being written stops
        # retrying if nothing of it is ours any more, and the ledger's epoch fences it if it commits late.
        self.flusher.own(self._epochs)
        self._publish()
        return dropped

    # -- the loop -------------------------------------------------------------------------------
    def _commit(self, settled: Settled) -> None:
        self._commit_offsets(
            [
                KafkaTopicPartition(t, p, o)
                for (t, p), o in settled.next_offsets.items()
                if (t, p) not in self._lost and (t, p) in self._assignment
            ]
        )

    def _commit_offsets(self, offsets: list[KafkaTopicPartition]) -> None:
        if not offsets:
            return
        started = time.perf_counter()
        try:
            results = self.consumer.commit(offsets=offsets, asynchronous=False) or []
            failed = [tp for tp in results if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
        except KafkaException as exc:
            # The rows are in the database and the ledger holds these offsets, so nothing is lost; but Kafka
            # must catch up even if no further record arrives (a rebalance in progress, say): retry soon.
            metrics.COMMITS.labels("failed").inc()
            log.warning("offset commit failed (%s); retrying, the offsets ledger covers it meanwhile", exc)
            for tp in offsets:
                self._uncommitted[(tp.topic, tp.partition)] = tp.offset
            return
        metrics.COMMITS.labels("ok").inc()
        metrics.FLUSH_SECONDS.labels("commit").observe(time.perf_counter() - started)
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self._committed[key] = tp.offset
            if self._uncommitted.get(key, -1) <= tp.offset:
                self._uncommitted.pop(key, None)
        self._publish()

    def _retry_commits(self, now: float) -> None:
        """Commit again what failed to commit, for partitions still ours, at most once a second."""
        if not self._uncommitted or now - self._commit_retry_at < 1.0:
            return
        self._commit_retry_at = now
        pending, self._uncommitted = self._uncommitted, {}
        self._commit_offsets(
            [KafkaTopicPartition(t, p, o) for (t, p), o in pending.items() if (t, p) in self._assignment]
        )

    def _handle_done(self, done: Sequence[Done]) -> None:
        """Commit what settled, in order; stop at a failure, committing nothing after it."""
        for item in done:
            if isinstance(item, FlushFailed):
                self._settling = False
                raise SinkFailed(f"flush of {item.table} failed: {item.error}") from item.error
            if isinstance(item, Abandoned):
                log.info("nothing of the abandoned flush of %s was committed", item.table)
                continue
            for topic, newest_us in item.newest_event_us.items():
                if newest_us > self._newest_event_us.get(topic, -1):
                    self._newest_event_us[topic] = newest_us
            self._commit(item)

    def _submit(self, batch: TableBatch) -> None:
        # The epochs the batch's records were read under: its ledger update is fenced on them.
        batch.fence = {tp: self._epochs[tp] for tp in batch.partitions if tp in self._epochs}
        self.flusher.submit(batch)

    def _submit_due(self, now_ms: float, *, force: Sequence[str] = ()) -> None:
        for table in [*force, *self.batcher.due(now_ms)]:
            if not self.flusher.has_room():
                return
            batch = self.batcher.take(table)
            if batch is not None:
                self._submit(batch)

    def _drain(self, tables: Sequence[str], *, deadline_s: float) -> bool:
        """Flush these tables now and wait for them (and everything before them) to commit."""
        deadline = time.monotonic() + deadline_s
        remaining = list(tables)
        while remaining or self.flusher.pending:
            while remaining and self.flusher.has_room():
                batch = self.batcher.take(remaining.pop(0))
                if batch is not None:
                    self._submit(batch)
            self._handle_done(self.flusher.collect(timeout_s=0.05))
            self.state.beat()
            if time.monotonic() > deadline:
                log.error("drain deadline of %.0fs passed; uncommitted records will be re-delivered", deadline_s)
                return False
        return True

    def _poll_timeout_s(self, poll_s: float) -> float:
        """How long the next poll may block: never past the moment a batch is due, and only briefly while a
        flush is in flight, so that its offsets are committed as soon as it settles (latency = max_ms + flush,
        not + two poll timeouts)."""
        wait = poll_s
        if self.flusher.pending:
            wait = min(wait, SETTLED_POLL_S)
        deadline = self.batcher.next_deadline_ms()
        if deadline is not None:
            wait = min(wait, max(0.001, (deadline - time.monotonic() * 1000) / 1000))
        return wait

    def _blocked(self) -> bool:
        """A full batch waits for the flusher: reading on would only buffer more."""
        return not self.flusher.has_room() and any(self.batcher.is_full(t) for t in self.batcher.batches)

    def _wait_for_flusher(self) -> None:
        """Backpressure without a pause: settle, commit and submit as the flusher frees a slot."""
        deadline = time.monotonic() + FLUSHER_WAIT_S
        while self._blocked() and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._handle_done(self.flusher.collect(timeout_s=min(remaining, 0.1)))
            self._submit_due(time.monotonic() * 1000)

    # -- pauses ---------------------------------------------------------------------------------
    def _apply_pauses(self) -> None:
        """Pause at the client exactly what should be: everything under backpressure, an operator's
        pauses, and partitions not yet claimed; resume the rest."""
        wanted = self._unclaimed | (self._operator_pauses & self._assignment)
        if self._backpressure:
            wanted |= self._assignment
        pause, resume = wanted - self._client_paused, (self._client_paused - wanted) & self._assignment
        if pause:
            self.consumer.pause([KafkaTopicPartition(t, p) for t, p in pause])
        if resume:
            self.consumer.resume([KafkaTopicPartition(t, p) for t, p in resume])
        if pause or resume:
            self._client_paused = wanted
            self._publish()

    def _check_backpressure(self) -> None:
        full = self.batcher.buffered >= self.settings.batching.max_buffered_records or self._blocked()
        if full != self._backpressure:
            self._backpressure = full
            self._apply_pauses()

    # -- operator actions (called from the HTTP thread; run on the consumer thread) --------------
    def _matching(self, topic: str, partition: int | None) -> set[TopicPartition]:
        return {(t, p) for t, p in self._assignment if t == topic and (partition is None or p == partition)}

    def pause(self, topic: str, partition: int | None = None) -> None:
        def act() -> None:
            chosen = self._matching(topic, partition)
            self._operator_pauses |= chosen
            self._apply_pauses()
            log.info("paused by operator: %s", _names(chosen))

        self._commands.put(act)

    def resume(self, topic: str, partition: int | None = None) -> None:
        def act() -> None:
            # An operator's pause held for a partition not assigned here now is released too.
            chosen = {(t, p) for t, p in self._operator_pauses if t == topic and partition in (None, p)}
            self._operator_pauses -= chosen
            self._apply_pauses()
            log.info("resumed by operator: %s", _names(chosen))

        self._commands.put(act)

    def flush_now(self) -> None:
        def act() -> None:
            self._flush_requested = True

        self._commands.put(act)

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()
            self._publish()

    # -- what other threads see -----------------------------------------------------------------
    def _publish(self) -> None:
        """Replace the status snapshot other threads read (they never see the collections above)."""
        self._published_at = time.monotonic()
        self.state.snapshot = StatusSnapshot.of(
            assignment=self._assignment,
            paused=self._client_paused,
            operator_paused=self._operator_pauses,
            unclaimed=self._unclaimed,
            committed=self._committed,
            end_offsets=self._end_offsets,
            buffered=self.batcher.buffered,
        )

    def _refresh_end_offsets(self, now: float) -> None:
        """High watermarks: the client's cached ones, and the broker's for paused partitions (not fetched,
        so their cache stands still), asked without blocking and read at a later turn."""
        for asked, future in list(self._end_offset_requests.items()):
            if not future.done():
                continue
            del self._end_offset_requests[asked]
            with contextlib.suppress(Exception):  # the broker did not answer: ask again later
                if (asked.topic, asked.partition) in self._client_paused:
                    self._end_offsets[(asked.topic, asked.partition)] = future.result().offset
        for tp in self._assignment - self._client_paused:
            try:
                _low, high = self.consumer.get_watermark_offsets(KafkaTopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self._end_offsets[tp] = high
        # A partition just assigned paused has no end offset yet: ask at the next turn, not in 5 s.
        unknown = any(tp not in self._end_offsets for tp in self._client_paused)
        due = now - self._ends_at >= (1.0 if unknown else PAUSED_END_OFFSETS_S)
        if self._client_paused and not self._end_offset_requests and due:
            self._ends_at = now
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in the stubs
            wanted = {KafkaTopicPartition(t, p): latest for t, p in self._client_paused}
            try:
                self._end_offset_requests = self.admin.list_offsets(wanted, request_timeout=PAUSED_END_OFFSETS_S)
            except KafkaException as exc:
                log.debug("end offsets of paused partitions unavailable: %s", exc)

    def _update_gauges(self, now: float) -> None:
        if now - self._gauges_at < 1.0:
            if now - self._published_at >= PUBLISH_EVERY_S:
                self._publish()
            return
        self._gauges_at = now
        self._refresh_end_offsets(now)
        metrics.ASSIGNED_PARTITIONS.set(len(self._assignment))
        metrics.PAUSED_PARTITIONS.set(len(self._client_paused))
        metrics.BUFFERED.set(self.batcher.buffered)
        for tp in self._assignment:
            high = self._end_offsets.get(tp)
            if high is not None:
                metrics.LAG.labels(tp[0], str(tp[1])).set(max(0, high - self._committed.get(tp, 0)))
        wall_us = time.time() * 1e6
        for topic, newest_us in self._newest_event_us.items():
            metrics.FRESHNESS.labels(topic).set(max(0.0, (wall_us - newest_us) / 1e6))
        stats = self.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        metrics.POOL.labels("in_use").set(size - idle)
        metrics.POOL.labels("idle").set(idle)
        metrics.POOL.labels("waiting").set(stats.get("requests_waiting", 0))
        metrics.UP.set(1 if self.ready() is None else 0)
        self._publish()

    def ready(self) -> str | None:
        """None when ready; otherwise the reason it is not."""
        if self.state.breaker_open:
            return "circuit breaker open: the database is failing"
        if not self.state.database_ok:
            return "database not reachable"
        if not self.state.joined:
            return "not yet joined the consumer group"
        return None

    def run(self) -> int:
        """Consume until stopped; returns the process exit code. Raises SinkFailed or StartupError."""
        drained = False
        try:
            self._open()
            tune_for_throughput()
            from mds_sink.http.server import start_side_port  # noqa: PLC0415  (the HTTP layer imports the worker)

            # Bound before joining the group: a port in use fails the start-up without a rebalance.
            side_port = start_side_port(self)
            self._closing("side port", side_port.stop)
            s = self.settings
            self.consumer.subscribe(
                list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            self.refresher.start()
            self._closing("tenant refresher", self.refresher.stop)
            self.probe.start()
            self._closing("database probe", self.probe.stop)
            log.info("consuming %s as group %s", ", ".join(sorted(self.routes)), s.kafka.group_id)
            self._loop(s.kafka.poll_timeout_ms / 1000)
            drained = self._drain(list(self.batcher.batches), deadline_s=s.shutdown_deadline_s)
            if not drained:
                # Give up what is in flight: the revocation on the way out must not wait for it again.
                self._settling = False
                self.flusher.own({})
        except BaseException:
            self._settling = False  # leaving the group on the way out commits nothing more
            raise
        finally:
            self._resources.close()
        log.info("stopped%s", "" if drained else " without draining everything")
        return 0 if drained else 1

    def _loop(self, poll_s: float) -> None:
        while not self.stopping.is_set():
            msgs = self.consumer.consume(CONSUME_BATCH, timeout=self._poll_timeout_s(poll_s))
            started = time.perf_counter()
            now_ms = time.monotonic() * 1000
            self.rules.now_us = int(time.time() * 1e6)
            per_topic, errors = self.ingest.add_all(msgs, now_ms)
            for event in errors:
                if event.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", event.error())
            if msgs:
                metrics.FLUSH_SECONDS.labels("decode").observe(time.perf_counter() - started)
                for topic, n in per_topic.items():
                    metrics.CONSUMED.labels(topic).inc(n)
            self._run_commands()
            self._handle_done(self.flusher.collect())
            forced = list(self.batcher.batches) if self._flush_requested else []
            self._flush_requested = False
            self._submit_due(now_ms, force=forced)
            self._wait_for_flusher()
            self._check_backpressure()
            now = time.monotonic()
            self._claim_pending(now)
            self._retry_commits(now)
            self._update_gauges(now)
            self.state.beat()

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("received %s: draining", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
