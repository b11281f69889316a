"""Fill the benchmark topics, or find them already filled (a topic's name says what it holds).

Values are encoded in worker processes, each owning whole series (so a symbol's records keep
their order in its partition), and produced with large batches and linger.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # exported, not in stubs

from benchmarks import data
from mds_sink.avro.codec import frame, load_schema_file, local_schema_id, strip_logical_types
from mds_sink.config.resources import resource_dir
from mds_sink.core.catalog import TABLES

Generator = Callable[[data.Shape, list[str], int], tuple[bytes, dict[str, Any]]]
GENERATORS: dict[str, Generator] = {"bars": data.bar, "quotes": data.quote}
# Bench topics outlive the broker's 24 h default retention, so a fill is reused on later days.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(frozen=True, slots=True)
class Filled:
    topic: str
    records: int
    seconds: float  # 0.0 when the topic was already full
    reused: bool


def end_offsets(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermarks; empty if the topic does not exist."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe", "log_level": 3})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        return {
            p: consumer.get_watermark_offsets(KafkaTopicPartition(topic, p), timeout=timeout_s)
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def recreate(admin: AdminClient, topic: str, partitions: int, *, timeout_s: float = 60.0) -> None:
    existing = admin.list_topics(timeout=10).topics
    if topic in existing:
        admin.delete_topics([topic], operation_timeout=timeout_s)[topic].result(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:  # a deleted topic lingers for a moment: creating it again fails until it is gone
        future = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=TOPIC_CONFIG)]
        )
        try:
            future[topic].result(timeout=timeout_s)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _produce_share(bootstrap: str, table: str, shape: data.Shape, count: int, worker: int, workers: int) -> int:
    """Runs in a worker process: encode and produce records worker, worker + workers, ..."""
    spec = TABLES[table]
    schema = load_schema_file(resource_dir("schemas") / f"{spec.record}.avsc")
    parsed = fastavro.parse_schema(strip_logical_types(schema))
    schema_id = local_schema_id(schema)
    tenants = shape.tenant_ids()
    generate = GENERATORS[table]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,  # keeps each partition in produce order across retries
            "compression.type": "lz4",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "log_level": 3,
        }
    )
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    topic = shape.topic(table)
    out = io.BytesIO()
    sent = 0
    for i in range(worker, count, workers):
        key, record = generate(shape, tenants, i)
        out.seek(0)
        out.truncate()
        fastavro.schemaless_writer(out, parsed, record)
        value = frame(schema_id, out.getvalue())
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.05)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or failed:
        raise RuntimeError(f"fill of {topic}: not acknowledged ({failed[:1] or 'timeout'})")
    return sent


def _workers(shape: data.Shape) -> int:
    # Whole series per worker: record i belongs to series i % series, so workers must divide it.
    n = max(1, min(os.cpu_count() or 1, 4))
    while shape.series % n:
        n -= 1
    return n


def fill(bootstrap: str, shape: data.Shape, table: str, *, refill: bool = False) -> Filled:
    """The topic of `table` holding exactly its share of the shape, from offset 0."""
    topic = shape.topic(table)
    count = shape.records if table == "bars" else shape.quotes
    marks = end_offsets(bootstrap, topic)
    if (
        not refill
        and len(marks) == shape.partitions
        and all(low == 0 for low, _ in marks.values())
        and sum(high for _, high in marks.values()) == count
    ):
        return Filled(topic, count, 0.0, reused=True)
    recreate(AdminClient({"bootstrap.servers": bootstrap, "log_level": 3}), topic, shape.partitions)
    started = time.monotonic()
    workers = _workers(shape)
    # Spawned, not forked: a fork copies librdkafka's locks mid-use from the admin client's threads, and
    # a child can wait on one forever.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        sent = sum(pool.starmap(_produce_share, [(bootstrap, table, shape, count, w, workers) for w in range(workers)]))
    seconds = time.monotonic() - started
    marks = end_offsets(bootstrap, topic)
    if sent != count or sum(high for _, high in marks.values()) != count:
        raise RuntimeError(f"fill of {topic}: {sent} sent, end offsets {marks}, expected {count}")
    return Filled(topic, count, seconds, reused=False)
