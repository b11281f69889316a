"""The two raw bounds, measured with the sink's own code on the same records as the end-to-end run.

(1) consume + decode + validate, no database: how fast one Python thread turns the topics into rows.
(2) COPY into staging + per-tenant upsert + ledger, no Kafka: how fast one connection writes those
    rows in the sink's batches, into empty tables (fresh) and again (replay: every row a conflict).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from benchmarks.stats import rate
from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import Settings
from mds_sink.core.batcher import Source, TableBatch
from mds_sink.core.catalog import TABLES, VALIDATORS
from mds_sink.core.validate import Row, Rules, TenantSet
from mds_sink.db.writer import Writer, database_pool
from mds_sink.kafka.clients import consumer_config


@dataclass
class Consumed:
    """Rows per table in consumption order, with where each came from."""

    rows: dict[str, list[tuple[Row, int, int]]] = field(default_factory=dict)  # table -> (row, partition, offset)
    records: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return rate(self.records, self.seconds)


def consume_decode(
    settings: Settings, topics: Mapping[str, str], ends: Mapping[tuple[str, int], int], tenant_ids: Sequence[str]
) -> Consumed:
    """Bound (1): every record of `topics` (topic -> table) read, decoded and validated once."""
    schemas = resource_dir("schemas")
    source = LocalSchemas.from_dir(schemas)
    decoders = {t: Decoder(load_schema_file(schemas / f"{TABLES[t].record}.avsc"), source) for t in topics.values()}
    rules = Rules(TenantSet({t: True for t in tenant_ids}), now_us=int(time.time() * 1e6))
    consumer = Consumer({**consumer_config(settings), "group.id": f"bench-bound-{uuid.uuid4().hex[:8]}"})
    remaining = {tp: end for tp, end in ends.items() if end > 0}
    consumer.assign([KafkaTopicPartition(t, p, OFFSET_BEGINNING) for t, p in remaining])
    out = Consumed(rows={t: [] for t in topics.values()})
    started = time.perf_counter()
    try:
        while remaining:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is not None:
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None  # set on every record
                table = topics[topic]
                out.records += 1
                try:
                    row = VALIDATORS[table](decoders[table].decode(msg.value()), rules)
                except Exception:
                    out.rejected += 1
                else:
                    out.rows[table].append((row, partition, offset))
                if offset + 1 >= remaining.get((topic, partition), 1 << 62):
                    del remaining[(topic, partition)]
            if time.perf_counter() - started > 900:
                raise TimeoutError("bound (1) did not finish within 900 s")
    finally:
        out.seconds = time.perf_counter() - started
        consumer.close()
    return out


def batches(consumed: Consumed, topics: Mapping[str, str], max_rows: int) -> list[TableBatch]:
    """The rows cut into the sink's batches (dedupe and ledger offsets included), in consumption order."""
    topic_of = {table: topic for topic, table in topics.items()}
    out: list[TableBatch] = []
    for table, rows in consumed.rows.items():
        batch = TableBatch(TABLES[table], 0.0)
        for row, partition, offset in rows:
            batch.add(row, Source(topic_of[table], partition, offset), 0)
            if len(batch.rows) >= max_rows:
                out.append(batch)
                batch = TableBatch(TABLES[table], 0.0)
        if batch.records:
            out.append(batch)
    return out


@dataclass(frozen=True, slots=True)
class Written:
    records: int  # input records the batches stand for (before in-batch dedupe)
    rows: int  # rows staged
    seconds: float

    @property
    def rate(self) -> float:
        return rate(self.records, self.seconds)


def write_all(settings: Settings, todo: Sequence[TableBatch], group: str) -> Written:
    """Bound (2): the batches through the sink's Writer on one connection, one after the other."""
    pool = database_pool(settings.database, min_size=1, max_size=1, name="mds-bench")
    pool.open(wait=True)
    try:
        writer = Writer(pool, group)
        # As the worker does at assignment: each partition claimed once, every write fenced on its epoch.
        epochs = {tp: c.epoch for tp, c in writer.claim({tp for b in todo for tp in b.next_offsets}).items()}
        started = time.perf_counter()
        rows = 0
        for batch in todo:
            fence = {tp: epochs[tp] for tp in batch.next_offsets}
            rows += writer.write(
                batch.spec, [row for row, _ in batch.rows.values()], batch.next_offsets, fence=fence
            ).rows
        seconds = time.perf_counter() - started
    finally:
        pool.close()
    return Written(sum(b.records for b in todo), rows, seconds)
