"""Reading and replaying the dead-letter topics (`mds-sink dlq ...`)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, Producer, TopicPartition

from mds_sink.avro.codec import Decoder, SchemaSource, load_schema_file
from mds_sink.avro.sources import open_schema_source
from mds_sink.config.settings import Settings
from mds_sink.core.batcher import Batcher, Source
from mds_sink.core.catalog import TABLES, VALIDATORS
from mds_sink.core.deadletter import dead_letter_topic
from mds_sink.core.rejection import RecordRejected, field_error
from mds_sink.core.validate import Rules, TenantSet
from mds_sink.db.writer import Writer, database_pool
from mds_sink.dlq.view import DeadLetterView, Filters, replay_headers
from mds_sink.errors import BrokerUnavailable
from mds_sink.kafka.clients import consumer_config, producer_config, watermarks


def topics_of(settings: Settings) -> dict[str, list[str]]:
    """Dead-letter topic -> the source topics that feed it (one each, or all into one shared topic)."""
    out: dict[str, list[str]] = {}
    for source in settings.topics.table_by_topic():
        out.setdefault(dead_letter_topic(settings.topics.dead_letter, source), []).append(source)
    return out


def decoders(settings: Settings, source: SchemaSource) -> dict[str, Decoder]:
    """Source topic -> decoder with the current schemas (for tenant lookup and re-validation)."""
    schemas_dir = settings.schemas
    return {
        topic: Decoder(load_schema_file(schemas_dir / f"{TABLES[table].record}.avsc"), source)
        for topic, table in settings.topics.table_by_topic().items()
    }


def _view(msg: Any, decoder_by_topic: dict[str, Decoder]) -> DeadLetterView:
    headers = tuple((n, v or b"") for n, v in (msg.headers() or []))
    view = DeadLetterView(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers)
    decoder = decoder_by_topic.get(view.source_topic)
    record = None
    if decoder is not None:
        try:
            record = decoder.decode(view.value)
        except RecordRejected:
            record = None
    return DeadLetterView(view.dlq_topic, view.dlq_partition, view.dlq_offset, view.key, view.value, headers, record)


def _positions(
    settings: Settings,
    topics: list[str],
    *,
    start: dict[tuple[str, int], int] | None = None,
) -> tuple[list[TopicPartition], dict[tuple[str, int], int]]:
    """Partitions to read, from `start` (or the low watermark) to the high watermark seen now."""
    assign: list[TopicPartition] = []
    ends: dict[tuple[str, int], int] = {}
    for (topic, p), (low, high) in watermarks(settings, topics).items():
        begin = max(low, (start or {}).get((topic, p), low))
        if high > begin:
            assign.append(TopicPartition(topic, p, begin))
            ends[(topic, p)] = high
    return assign, ends


def _read(consumer: Consumer, assign: list[TopicPartition], ends: dict[tuple[str, int], int]) -> Iterator[Any]:
    """Messages of the assigned partitions up to the ends, then stop (a snapshot, not a tail)."""
    if not assign:
        return
    consumer.assign(assign)
    remaining = dict(ends)
    idle_since = time.monotonic()
    while remaining:
        msgs = consumer.consume(500, timeout=1.0)
        if not msgs and time.monotonic() - idle_since > 30:
            raise BrokerUnavailable(f"no dead letters arrived for 30 s with {sum(remaining.values())} expected")
        for msg in msgs:
            if msg.error() is not None:
                continue
            idle_since = time.monotonic()
            tp = (msg.topic(), msg.partition())
            offset = msg.offset() or 0
            yield msg
            if tp in remaining and offset + 1 >= remaining[tp]:
                del remaining[tp]


class Progress(Protocol):
    """Told how many dead letters there are to read, then of each one read."""

    def total(self, n: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def total(self, n: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def _to_read(assign: list[TopicPartition], ends: dict[tuple[str, int], int]) -> int:
    return sum(ends[(tp.topic, tp.partition)] - tp.offset for tp in assign)


def read_dead_letters(
    settings: Settings, filters: Filters, *, progress: Progress | None = None
) -> Iterator[DeadLetterView]:
    shown = progress or _Silent()
    consumer = Consumer({**consumer_config(settings), "group.id": f"mds-sink-dlq-reader-{uuid.uuid4().hex[:8]}"})
    schemas = open_schema_source(settings, settings.schemas)
    try:
        decoder_by_topic = decoders(settings, schemas)
        assign, ends = _positions(settings, list(topics_of(settings)))
        shown.total(_to_read(assign, ends))
        for msg in _read(consumer, assign, ends):
            shown.advance()
            view = _view(msg, decoder_by_topic)
            if filters.matches(view):
                yield view
    finally:
        consumer.close()
        schemas.close()


@dataclass
class ReplaySummary:
    replayed: int = 0
    skipped_max_replays: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)
    filtered_out: int = 0
    dry_run: bool = False

    def line(self) -> str:
        failing = sum(self.still_failing.values())
        detail = ", ".join(f"{r}: {n}" for r, n in self.still_failing.most_common())
        verb = "would replay" if self.dry_run else "replayed"
        return (
            f"{verb} {self.replayed}, skipped {self.skipped_max_replays} (replay limit), still failing "
            f"{failing}{' (' + detail + ')' if detail else ''}, not matching the filters {self.filtered_out}"
        )


class _RateLimit:
    def __init__(self, per_second: float | None) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
        self._next = max(now, self._next) + self._interval


@dataclass
class _Replayer:
    """Decides, per dead letter, whether it can go back, and sends it there."""

    settings: Settings
    filters: Filters
    rules: Rules
    decoders: dict[str, Decoder]
    max_replays: int
    summary: ReplaySummary
    direct: Batcher = field(default_factory=lambda: Batcher(max_rows=1 << 30, max_ms=1 << 30, max_bytes=1 << 40))

    def admit(self, view: DeadLetterView) -> tuple[str, Any] | None:
        """(table, validated row) for a dead letter to replay; None (and counted) otherwise."""
        if not self.filters.matches(view):
            self.summary.filtered_out += 1
            return None
        if view.replay_count >= self.max_replays:
            self.summary.skipped_max_replays += 1
            return None
        table = self.settings.topics.table_by_topic().get(view.source_topic)
        if table is None:
            self.summary.still_failing["source_topic_not_consumed"] += 1
            return None
        try:
            row = VALIDATORS[table](self.decoders[view.source_topic].decode(view.value), self.rules)
        except RecordRejected as exc:
            self.summary.still_failing[exc.rejection.code] += 1
            return None
        except (KeyError, TypeError, ValueError) as exc:
            self.summary.still_failing[field_error(exc).code] += 1
            return None
        self.summary.replayed += 1
        return table, row


def _committed(settings: Settings, consumer: Consumer, topics: list[str]) -> dict[tuple[str, int], int]:
    probe, _ = _positions(settings, topics)
    found = consumer.committed([TopicPartition(t.topic, t.partition) for t in probe], timeout=10)
    return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset is not None and tp.offset >= 0}


def replay(
    settings: Settings,
    filters: Filters,
    *,
    dry_run: bool = False,
    rate_per_s: float | None = None,
    max_replays: int = 3,
    direct: bool = False,
    from_beginning: bool = False,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Re-validate matching dead letters against the current schemas and tenants, then republish them
    to their source topic (or write them straight to the database). Progress is kept in a consumer
    group of its own per filter set, so an interrupted replay resumes where it stopped."""
    summary = ReplaySummary(dry_run=dry_run)
    group = f"{settings.kafka.group_id}.dlq-replay.{filters.fingerprint()}"
    consumer = Consumer({**consumer_config(settings), "group.id": group})
    producer = Producer(producer_config(settings))
    pool = database_pool(settings.database, min_size=1, max_size=1, name="mds-sink-dlq-replay")
    pool.open(wait=True, timeout=settings.database.connect_timeout_s + 1)
    writer = Writer(pool, group)
    rules = settings.validation.rules(TenantSet(writer.tenants()), now_us=int(time.time() * 1e6))
    limit = _RateLimit(rate_per_s)
    schemas = open_schema_source(settings, settings.schemas)
    try:
        decoder_by_topic = decoders(settings, schemas)
        replayer = _Replayer(settings, filters, rules, decoder_by_topic, max_replays, summary)
        topics = list(topics_of(settings))
        assign, ends = _positions(
            settings, topics, start=None if from_beginning else _committed(settings, consumer, topics)
        )
        shown = progress or _Silent()
        shown.total(_to_read(assign, ends))
        done: dict[tuple[str, int], int] = {}
        for msg in _read(consumer, assign, ends):
            shown.advance()
            done[(msg.topic(), msg.partition())] = (msg.offset() or 0) + 1
            view = _view(msg, decoder_by_topic)
            admitted = replayer.admit(view)
            if admitted is None or dry_run:
                continue
            limit.wait()
            table, row = admitted
            if direct:
                source = Source(view.source_topic, view.source_partition, view.source_offset)
                replayer.direct.batch(TABLES[table], 0).add(row, source, len(view.value or b""))
            else:
                producer.produce(view.source_topic, key=view.key, value=view.value, headers=replay_headers(view))
                producer.poll(0)
        if dry_run:
            return summary
        for batch in replayer.direct.batches.values():
            writer.write(batch.spec, [r for r, _ in batch.rows.values()], {})
        # Only once every replayed record is acknowledged (or written) does the replay position move.
        if producer.flush(30):
            raise BrokerUnavailable("replayed records were not acknowledged; nothing committed, run again")
        if done:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()], asynchronous=False)
    finally:
        consumer.close()
        pool.close()
        schemas.close()
    return summary
