"""The consumer loop: the only place that sequences I/O (poll, hand batches to the flusher, commit).

The worker opens the sink's resources, wires its units (sink.units) and turns the loop; the units hold
the rules: rebalance (which partitions are owned, under which ledger epoch), commits (settled batches
committed in order, nothing after a failed one), backpressure (what is paused and why), gauges (what
other threads see). The service (mds_sink.service) opens it, starts it, runs it and closes it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from mds_sink import metrics
from mds_sink.avro.codec import Decoder, SchemaSource, load_schema_file
from mds_sink.avro.sources import open_schema_source
from mds_sink.config.settings import Settings
from mds_sink.core.batcher import Batcher, TableBatch, TopicPartition
from mds_sink.core.catalog import TABLES
from mds_sink.core.tenancy import TenantTopics
from mds_sink.core.validate import TenantSet
from mds_sink.db.preflight import check_database
from mds_sink.db.writer import Staged, Writer, database_pool
from mds_sink.kafka.clients import (
    DeadLetterProducer,
    admin_config,
    prepare_topics,
    producer_config,
)
from mds_sink.kafka.consumer import open_group_consumer
from mds_sink.sink.continuity import open_continuity
from mds_sink.sink.control import SinkState
from mds_sink.sink.deadletters import DeadLetters, rejected
from mds_sink.sink.flusher import Flusher
from mds_sink.sink.gauges import Gauges
from mds_sink.sink.health import DatabaseProbe
from mds_sink.sink.pipeline import Ingest, Settled, settle
from mds_sink.sink.tenants import TenantRefresher
from mds_sink.sink.units import wire

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
        # Tenant-scoped topics (topics.tenant_topics): the routes name the base topics, each a pattern.
        self.tenant_topics = TenantTopics(tuple(self.routes)) if settings.topics.tenant_topics else None
        self.topics = frozenset(self.routes)
        self.tables = frozenset(spec.name for spec in self.routes.values())
        # Operator actions, queued by the HTTP thread and run on the consumer thread.
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._flush_requested = False
        self._resources = contextlib.ExitStack()  # closed in reverse order of opening

    # -- what the side port may see and do (mds_sink.sink.control.SinkControl) -------------------
    def ready(self) -> str | None:
        """None when ready; otherwise the reason it is not."""
        if self.state.breaker_open:
            return "circuit breaker open: the database is failing"
        if not self.state.database_ok:
            return "database not reachable"
        if not self.state.joined:
            return "not yet joined the consumer group"
        return None

    def pause(self, topic: str, partition: int | None = None) -> None:
        self._commands.put(lambda: self.units.pauses.pause_by_operator(topic, partition))

    def resume(self, topic: str, partition: int | None = None) -> None:
        self._commands.put(lambda: self.units.pauses.resume_by_operator(topic, partition))

    def flush_now(self) -> None:
        def act() -> None:
            self._flush_requested = True

        self._commands.put(act)

    def reload_tenants(self) -> tuple[int, int]:
        self.refresher.refresh()
        active = self.tenants.active
        return len(active), sum(active.values())

    # -- wiring -----------------------------------------------------------------------------------
    def _closing(self, name: str, close: Callable[[], Any]) -> None:
        """Close this when the worker closes (in reverse order), logging instead of raising."""

        def quietly() -> None:
            try:
                close()
            except Exception as exc:
                log.warning("%s close: %s", name, exc)

        self._resources.callback(quietly)

    def open(self) -> None:
        """Open everything but the group membership; raises StartupError. `close` releases what was opened."""
        s = self.settings
        self.pool = database_pool(
            s.database, min_size=s.database.pool_min_size, max_size=s.database.pool_max_size, name="mds-sink"
        )
        self._closing("pool", self.pool.close)
        self.state.schema_revision = check_database(s, self.pool)
        self.state.database_ok = True
        self.writer = Writer(self.pool, s.kafka.group_id)
        self.admin = AdminClient(admin_config(s))
        for created in prepare_topics(self.admin, s, self.routes, must_exist=self.tenant_topics is None):
            log.info("created dead-letter topic %s", created)

        schemas_dir = s.schemas
        source: SchemaSource = open_schema_source(s, schemas_dir)
        self._closing("schema source", source.close)
        decoders = {
            spec.name: Decoder(load_schema_file(schemas_dir / f"{spec.record}.avsc"), source)
            for spec in self.routes.values()
        }
        self.tenants = TenantSet()
        self.refresher = TenantRefresher(self.writer.tenants, self.tenants, s.validation.tenant_refresh_s)
        self.refresher.refresh()
        self.tenants.on_miss = self.refresher.reload_on_miss
        self.rules = s.validation.rules(self.tenants, now_us=int(time.time() * 1e6))
        self.batcher = Batcher(s.batching.max_rows, s.batching.max_ms, s.batching.max_bytes)
        self.ingest = Ingest(
            self.routes, decoders, self.rules, self.batcher, on_reject=rejected, tenant_topics=self.tenant_topics
        )
        producer = DeadLetterProducer(Producer(producer_config(s)))
        self._closing("dead-letter producer", producer.close)
        dead_letters = DeadLetters(producer, s, base_topic=self._base_topic if self.tenant_topics else None)
        self.gaps = open_continuity(s, self.tables)
        if self.gaps is not None:
            self._closing("bar gaps", self.gaps.close)

        def write(b: TableBatch, ahead: Staged | None) -> Settled:
            started = time.perf_counter()
            settled = settle(
                b, self.writer, dead_letters.send, ahead=ahead, gaps=self.gaps if b.spec.name == "bars" else None
            )
            self.batcher.wrote(time.perf_counter() - started)  # max_ms is the budget until the row is committed
            return settled

        self.flusher = Flusher(
            write,
            retry=s.retry,
            state=self.state,
            # Beginning the next flush ahead holds a second connection: never the pool's last one.
            prepare=self._stage_ahead if s.database.pool_max_size >= 2 else None,
        )
        self._closing("flusher", self.flusher.close)
        self.probe = DatabaseProbe(s.database, self.state)
        self.consumer, self.protocol = open_group_consumer(s, self.admin)
        # Closing leaves the group; the revocation it runs drains only what may still settle.
        self._closing("consumer", self.consumer.close)
        self._wire_units()

    def _wire_units(self) -> None:
        units = self.units = wire(
            self.settings,
            self.consumer,
            self.writer,
            self.flusher,
            self.batcher,
            self.state,
            publish=self._publish,
            forget=self._forget,
            protocol=self.protocol,
        )
        self.gauges = Gauges(
            self.state,
            units.ownership,
            units.pauses,
            units.commits,
            self.batcher,
            consumer=self.consumer,
            admin=self.admin,
            pool_stats=self.pool.get_stats,
            ready=self.ready,
        )

    # The units report to the gauges, built after them (they read the units).
    def _publish(self) -> None:
        self.gauges.publish()

    def _forget(self, tps: set[TopicPartition]) -> None:
        self.gauges.forget(tps)
        if self.gaps is not None and tps:
            self.gaps.forget()

    def _stage_ahead(self, batch: TableBatch) -> Staged:
        """On the stager thread: the batch's transaction begun and its rows COPYed, while the one before is written."""
        rows = [row for row, _ in batch.rows.values()]
        staged = self.writer.stage(batch.spec, rows)
        if self.gaps is not None and batch.spec.name == "bars":
            self.gaps.look_ahead(rows)
        return staged

    def start(self) -> None:
        """Join the group (the side port is bound by now) and start the helper threads."""
        self.units.subscribe(self.consumer, self._subscription())
        self.refresher.start()
        self._closing("tenant refresher", self.refresher.stop)
        self.probe.start()
        self._closing("database probe", self.probe.stop)
        if self.gaps is not None:
            self.gaps.start()
        log.info(
            "consuming %s as group %s (%s group protocol)",
            ", ".join(sorted(self._subscription())),
            self.settings.kafka.group_id,
            self.protocol,
        )

    def _subscription(self) -> list[str]:
        if self.tenant_topics is None:
            return list(self.routes)
        return [self.tenant_topics.pattern(base) for base in self.routes]

    def _base_topic(self, topic: str) -> str:
        routed = self.tenant_topics.route(topic) if self.tenant_topics is not None else None
        return topic if routed is None else routed[0]

    def close(self) -> None:
        """Close what was opened, in reverse order; never raises."""
        self._resources.close()

    # -- the loop ---------------------------------------------------------------------------------
    def consume(self) -> bool:
        """Consume until stopped, then drain; True if everything buffered was committed. Raises SinkFailed."""
        s, commits = self.settings, self.units.commits
        try:
            self._loop(s.kafka.poll_timeout_ms / 1000)
            drained = commits.drain(list(self.batcher.batches), deadline_s=s.shutdown_deadline_s)
        except BaseException:
            commits.settling = False  # leaving the group on the way out commits nothing more
            raise
        if not drained:
            # Give up what is in flight: the revocation on the way out must not wait for it again.
            commits.stop()
        return drained

    def _loop(self, poll_s: float) -> None:
        commits, pauses = self.units.commits, self.units.pauses
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
            commits.handle_done(self.flusher.collect())
            forced = list(self.batcher.batches) if self._flush_requested else []
            self._flush_requested = False
            commits.submit_due(now_ms, force=forced)
            self._wait_for_flusher()
            pauses.check()
            now = time.monotonic()
            self.units.rebalance.claim_pending(now)
            commits.retry(now)
            self.gauges.update(now)
            self.state.beat()

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

    def _wait_for_flusher(self) -> None:
        """Backpressure without a pause: settle, commit and submit as the flusher frees a slot."""
        commits, deadline = self.units.commits, time.monotonic() + FLUSHER_WAIT_S
        while self.units.pauses.blocked() and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            commits.handle_done(self.flusher.collect(timeout_s=min(remaining, 0.1)))
            commits.submit_due(time.monotonic() * 1000)

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()
            self._publish()
