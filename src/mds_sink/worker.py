"""The consumer loop: the only place that sequences I/O (poll, hand batches to the flusher, commit)."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool

from mds_sink import __version__, deadletter, metrics
from mds_sink.batcher import Batcher, DeadLetter, TableBatch, TopicPartition
from mds_sink.codec import Decoder, SchemaSource, load_schema_file
from mds_sink.flusher import Flusher, FlushFailed
from mds_sink.gc_tuning import tune_for_throughput
from mds_sink.kafka_io import (
    BrokerUnavailable,
    DeadLetterProducer,
    StartupError,
    admin_config,
    consumer_config,
    dlq_topic_config,
    ensure_topics,
    partition_counts,
    producer_config,
)
from mds_sink.pipeline import Ingest, Settled, settle
from mds_sink.preflight import check_database, open_schema_source
from mds_sink.resources import resource_dir
from mds_sink.settings import Settings
from mds_sink.state import SinkState
from mds_sink.tables import TABLES
from mds_sink.tenants import TenantRefresher
from mds_sink.validate import Rules, TenantSet
from mds_sink.writer import Staged, Writer, database_pool

log = logging.getLogger(__name__)

CONSUME_BATCH = 1000
# A database slower than decoding: wait this long for the flusher before pausing the partitions.
# A pause drops every record librdkafka has prefetched for them, fetched again on resume, so short
# waits cost less than a pause; still far below max.poll.interval.ms, and rebalances wait at most this.
FLUSHER_WAIT_S = 1.0
# While a flush is in flight, poll in slices this short: its commit follows within this much.
SETTLED_POLL_S = 0.005


class Worker:
    def __init__(self, settings: Settings, *, state: SinkState | None = None) -> None:
        self.settings = settings
        self.state = state or SinkState()
        self.stopping = threading.Event()
        self.routes = {topic: TABLES[table] for topic, table in settings.topics.table_by_topic().items()}
        self._lost: set[TopicPartition] = set()
        self._paused = False  # backpressure: every assigned partition is paused
        self.operator_paused: set[TopicPartition] = set()  # paused through the admin API until resumed
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._flush_requested = False
        self._gauges_at = 0.0
        self._uncommitted: dict[TopicPartition, int] = {}  # offsets whose Kafka commit failed, to retry
        self._commit_retry_at = 0.0

    # -- start-up -------------------------------------------------------------------------------
    def _open(self) -> None:
        s = self.settings
        self.pool: ConnectionPool = database_pool(
            s.database, min_size=s.database.pool_min_size, max_size=s.database.pool_max_size, name="mds-sink"
        )
        self.state.schema_revision = check_database(s, self.pool)
        self.state.database_ok = True
        self.writer = Writer(self.pool, s.kafka.group_id)

        admin = AdminClient(admin_config(s))
        try:
            counts = partition_counts(admin, self.routes)
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
        for created in ensure_topics(admin, dlq_topics, dlq_topic_config()):
            log.info("created dead-letter topic %s", created)

        schemas_dir = s.schemas_dir or resource_dir("schemas")
        source: SchemaSource = open_schema_source(s, schemas_dir)
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
        self.flusher = Flusher(
            lambda b, ahead: settle(b, self.writer, self._send_dead_letters, ahead=ahead),
            retry=s.retry,
            state=self.state,
            # Beginning the next flush ahead holds a second connection: never the pool's last one.
            prepare=self._stage_ahead if s.database.pool_max_size >= 2 else None,
        )
        self.consumer = Consumer(consumer_config(s))

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

    # -- rebalances -----------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        metrics.REBALANCES.labels("assign").inc()
        self._lost.difference_update(tps)
        ledger = self._read_ledger()
        committed = {(p.topic, p.partition): p.offset for p in consumer.committed(partitions, timeout=30)}
        healed: list[KafkaTopicPartition] = []
        for p in partitions:
            start = committed.get((p.topic, p.partition), -1)
            if start >= 0:
                self.state.committed[(p.topic, p.partition)] = start
            ahead = ledger.get((p.topic, p.partition))
            # A crash between the database commit and the Kafka commit: the ledger is ahead.
            if ahead is not None and ahead > start:
                p.offset = ahead
                healed.append(KafkaTopicPartition(p.topic, p.partition, ahead))
                log.info(
                    "resuming from the offsets ledger at %d (Kafka had %d)",
                    ahead,
                    start,
                    extra={"topic": p.topic, "partition": p.partition},
                )
        if self.settings.kafka.assignment_strategy == "cooperative-sticky":
            consumer.incremental_assign(partitions)
        else:  # an eager rebalance revoked everything first: this is the whole new assignment
            consumer.assign(partitions)
        self.state.assignment.update(tps)
        self.state.joined = True
        if healed:
            # Those rows are in the database: Kafka catches up now, not at the next flush (there may be none).
            self._commit_offsets(healed)
        if self._paused:
            consumer.pause(partitions)
            self.state.paused.update(tps)
        log.info("assigned %s", ", ".join(f"{t}[{p}]" for t, p in sorted(tps)))

    def _read_ledger(self) -> dict[TopicPartition, int]:
        for attempt in range(5):
            try:
                return self.writer.ledger(self.routes)
            except Exception as exc:
                log.warning("cannot read the offsets ledger (attempt %d): %s", attempt + 1, exc)
                time.sleep(min(2.0**attempt, 5.0))
        log.error("offsets ledger unreadable: starting from Kafka's committed offsets (re-delivery is idempotent)")
        return {}

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        metrics.REBALANCES.labels("revoke").inc()
        self.state.revocations += 1
        log.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in sorted(tps)))
        if tps & self.state.assignment:
            self._drain(self.batcher.tables_with(tps), deadline_s=self.settings.shutdown_deadline_s)
        self._forget(tps)

    def _forget(self, tps: set[TopicPartition]) -> None:
        """A partition that moved away: no state, no operator pause, no lag series left behind."""
        self.state.assignment.difference_update(tps)
        self.state.paused.difference_update(tps)
        self.operator_paused.difference_update(tps)
        for tp in tps:
            self._uncommitted.pop(tp, None)
        for topic, partition in tps:
            self.state.committed.pop((topic, partition), None)
            self.state.end_offsets.pop((topic, partition), None)
            with contextlib.suppress(KeyError):  # no series yet for a partition that never reported
                metrics.LAG.remove(topic, str(partition))

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        metrics.REBALANCES.labels("lost").inc()
        self.state.revocations += 1
        dropped = self.batcher.drop(tps)
        self._lost.update(tps)
        self._forget(tps)
        log.warning("partitions lost: %s; dropped %d buffered records, nothing committed", sorted(tps), dropped)

    # -- the loop -------------------------------------------------------------------------------
    def _commit(self, settled: Settled) -> None:
        self._commit_offsets(
            [
                KafkaTopicPartition(t, p, o)
                for (t, p), o in settled.next_offsets.items()
                if (t, p) not in self._lost and (t, p) in self.state.assignment
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
            self.state.committed[key] = tp.offset
            if self._uncommitted.get(key, -1) <= tp.offset:
                self._uncommitted.pop(key, None)

    def _retry_commits(self, now: float) -> None:
        """Commit again what failed to commit, for partitions still ours, at most once a second."""
        if not self._uncommitted or now - self._commit_retry_at < 1.0:
            return
        self._commit_retry_at = now
        pending, self._uncommitted = self._uncommitted, {}
        self._commit_offsets(
            [KafkaTopicPartition(t, p, o) for (t, p), o in pending.items() if (t, p) in self.state.assignment]
        )

    def _handle_done(self, done: Sequence[Settled | FlushFailed]) -> None:
        for item in done:
            if isinstance(item, FlushFailed):
                raise RuntimeError(f"flush of {item.table} failed: {item.error}") from item.error
            self._commit(item)

    def _submit_due(self, now_ms: float, *, force: Sequence[str] = ()) -> None:
        for table in [*force, *self.batcher.due(now_ms)]:
            if not self.flusher.has_room():
                return
            batch = self.batcher.take(table)
            if batch is not None:
                self.flusher.submit(batch)

    def _drain(self, tables: Sequence[str], *, deadline_s: float) -> bool:
        """Flush these tables now and wait for them (and everything before them) to commit."""
        deadline = time.monotonic() + deadline_s
        remaining = list(tables)
        while remaining or self.flusher.pending:
            while remaining and self.flusher.has_room():
                batch = self.batcher.take(remaining.pop(0))
                if batch is not None:
                    self.flusher.submit(batch)
            self._handle_done(self.flusher.collect(timeout_s=0.05))
            self.state.beat()
            if time.monotonic() > deadline:
                self.flusher.abort.set()
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

    def _backpressure(self) -> None:
        full = self.batcher.buffered >= self.settings.batching.max_buffered_records or self._blocked()
        if full and not self._paused:
            self.consumer.pause([KafkaTopicPartition(t, p) for t, p in self.state.assignment])
            self._paused = True
            self.state.paused.update(self.state.assignment)
        elif not full and self._paused:
            # Partitions an operator paused stay paused.
            resumed = self.state.assignment - self.operator_paused
            self.consumer.resume([KafkaTopicPartition(t, p) for t, p in resumed])
            self._paused = False
            self.state.paused = set(self.operator_paused & self.state.assignment)

    # -- operator actions (called from the HTTP thread; run on the consumer thread) --------------
    def _matching(self, topic: str, partition: int | None) -> set[TopicPartition]:
        return {(t, p) for t, p in self.state.assignment if t == topic and (partition is None or p == partition)}

    def pause(self, topic: str, partition: int | None = None) -> None:
        def act() -> None:
            chosen = self._matching(topic, partition)
            self.operator_paused |= chosen
            self.consumer.pause([KafkaTopicPartition(t, p) for t, p in chosen])
            self.state.paused |= chosen
            log.info("paused by operator: %s", sorted(chosen))

        self._commands.put(act)

    def resume(self, topic: str, partition: int | None = None) -> None:
        def act() -> None:
            chosen = self._matching(topic, partition) & self.operator_paused
            self.operator_paused -= chosen
            if not self._paused:
                self.consumer.resume([KafkaTopicPartition(t, p) for t, p in chosen])
                self.state.paused -= chosen
            log.info("resumed by operator: %s", sorted(chosen))

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

    def _update_gauges(self, now: float) -> None:
        if now - self._gauges_at < 1.0:
            return
        self._gauges_at = now
        metrics.ASSIGNED_PARTITIONS.set(len(self.state.assignment))
        metrics.PAUSED_PARTITIONS.set(len(self.state.paused))
        metrics.BUFFERED.set(self.batcher.buffered)
        for tp in self.state.assignment:
            try:
                _low, high = self.consumer.get_watermark_offsets(KafkaTopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high < 0:
                continue
            committed = self.state.committed.get(tp)
            self.state.end_offsets[tp] = high
            metrics.LAG.labels(tp[0], str(tp[1])).set(max(0, high - (committed if committed is not None else 0)))
        wall_us = time.time() * 1e6
        for topic, newest_us in self.flusher.newest_event_us.items():
            metrics.FRESHNESS.labels(topic).set(max(0.0, (wall_us - newest_us) / 1e6))
        stats = self.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        metrics.POOL.labels("in_use").set(size - idle)
        metrics.POOL.labels("idle").set(idle)
        metrics.POOL.labels("waiting").set(stats.get("requests_waiting", 0))
        metrics.UP.set(1 if self.ready() is None else 0)

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
        """Consume until stopped; returns the process exit code."""
        self._open()
        tune_for_throughput()
        s = self.settings
        self.consumer.subscribe(
            list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.refresher.start()
        from mds_sink.http_api import start_side_port  # noqa: PLC0415  (the HTTP layer imports the worker)

        side_port = start_side_port(self)
        poll_s = s.kafka.poll_timeout_ms / 1000
        log.info("consuming %s as group %s", ", ".join(sorted(self.routes)), s.kafka.group_id)
        try:
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
                self._backpressure()
                self._retry_commits(time.monotonic())
                self._update_gauges(time.monotonic())
                self.state.beat()
            drained = self._drain(list(self.batcher.batches), deadline_s=s.shutdown_deadline_s)
        finally:
            side_port.stop()
            self.refresher.stop()
            self.flusher.close()
            try:
                self.consumer.close()  # leaves the group; revocation finds nothing left to flush
            except Exception as exc:
                log.warning("consumer close: %s", exc)
            self.dlq.close()
            self.pool.close()
            self.schema_source.close()
        log.info("stopped%s", "" if drained else " without draining everything")
        return 0 if drained else 1

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("received %s: draining", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
