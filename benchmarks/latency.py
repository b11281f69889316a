"""Latency under a steady offered load: produce time (CreateTime) to the group's committed offset.

A sink runs on a topic of its own; bars are produced at a fixed rate for a fixed time while a
thread polls the group's committed offsets every few milliseconds. A record's latency is the time
of the first poll that saw it committed, minus its produce time; the committed offset moves only
after the row is in the database, so this is produce-to-committed-row.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import psycopg
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from benchmarks import benchdb, data
from benchmarks.fill import recreate
from benchmarks.sinkproc import CommitWatch, Sink
from benchmarks.stats import Commit, commit_latencies, percentile
from mds_sink.avro.codec import frame, load_schema_file, local_schema_id, strip_logical_types
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import Settings
from mds_sink.kafka.clients import producer_config

TICK_S = 0.005  # produce pacing
# Polling intervals (each part of the latency it measures, so an upper bound by up to that much). The
# broker's OffsetFetch is dearer than a one-row query of the ledger: polled every 2 ms it took the
# broker 40% of a core on this machine, slowing the very flushes being measured.
KAFKA_POLL_S = 0.010
LEDGER_POLL_S = 0.002
WARMUP_S = 3.0  # records produced this early are left out (connections, first flush)


@dataclass(frozen=True, slots=True)
class Percentiles:
    measured: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    never_seen: int  # produced in the window, never seen committed


@dataclass
class Latency:
    rate: float  # offered records/s
    seconds: float
    produced: int
    kafka: Percentiles  # produce -> offset committed in Kafka (what the brief's target is about)
    ledger: Percentiles  # produce -> row committed in the database (its ledger row, same transaction)
    max_ms_setting: int
    cpu_s: float
    peak_rss_mb: float
    notes: list[str] = field(default_factory=list)


class _Watcher(threading.Thread):
    """Polls committed offsets per partition (Kafka's, or the ledger's) and notes when each moved."""

    def __init__(self, name: str, read: Callable[[], dict[int, int]], interval_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.read, self.interval_s = read, interval_s
        self.commits: list[Commit] = []
        self.latest: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            found = self.read()
            now_ms = time.time() * 1000
            for partition, offset in found.items():
                if offset > self.latest.get(partition, -1):
                    self.latest[partition] = offset
                    self.commits.append(Commit(now_ms, partition, offset))
            time.sleep(self.interval_s)


def _ledger_reader(settings: Settings, group: str) -> tuple[Callable[[], dict[int, int]], Callable[[], None]]:
    assert settings.database.reader_url is not None
    conn = psycopg.connect(settings.database.reader_url.get_secret_value(), autocommit=True)
    query = "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = %s"

    def read() -> dict[int, int]:
        return {int(p): int(o) for p, o in conn.execute(query, (group,)).fetchall()}

    return read, conn.close


def _percentiles(produced: dict[int, list[tuple[int, float]]], commits: list[Commit]) -> Percentiles:
    latencies = sorted(commit_latencies(produced, commits))
    return Percentiles(
        measured=len(latencies),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else float("nan"),
        never_seen=sum(len(r) for r in produced.values()) - len(latencies),
    )


class _Load:
    """Bars produced at a steady rate, each one's partition, offset and produce time kept."""

    def __init__(self, settings: Settings, topic: str, shape: data.Shape, total: int) -> None:
        self.topic = topic
        self.shape = data.Shape(total, shape.partitions, shape.tenants, shape.symbols, 0.0)
        self.tenants = self.shape.tenant_ids()
        schema = load_schema_file(resource_dir("schemas") / "bar.avsc")
        self.parsed, self.schema_id = fastavro.parse_schema(strip_logical_types(schema)), local_schema_id(schema)
        self.producer = Producer(producer_config(settings))
        self.produced: dict[int, list[tuple[int, float]]] = {}
        self.failed: list[str] = []

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))
            return
        # CreateTime: set by the client when produce() was called, in ms.
        self.produced.setdefault(msg.partition(), []).append((msg.offset(), float(msg.timestamp()[1])))

    def encode(self) -> list[tuple[bytes, bytes]]:
        """Every record's key and framed value, made before the load: encoding them while offering it
        took a third of a core from the machine under test."""
        out = io.BytesIO()
        encoded = []
        for i in range(self.shape.records):
            key, record = data.bar(self.shape, self.tenants, i)
            out.seek(0)
            out.truncate()
            fastavro.schemaless_writer(out, self.parsed, record)
            encoded.append((key, frame(self.schema_id, out.getvalue())))
        return encoded

    def offer(self, rate: float, records: list[tuple[bytes, bytes]]) -> float:
        """Produce `records` at `rate` records/s; returns the wall time the load began."""
        started, wall_started = time.monotonic(), time.time()
        sent, total = 0, len(records)
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate))
            while sent < due:
                key, value = records[sent]
                self.producer.produce(self.topic, key=key, value=value, on_delivery=self._delivered)
                sent += 1
            self.producer.poll(0)
            time.sleep(TICK_S)
        self.producer.flush(30)
        return wall_started


def measure(
    settings: Settings,
    sink_env: Mapping[str, str],
    shape: data.Shape,
    *,
    rate: float,
    seconds: float,
    log_dir: Path,
) -> Latency:
    topic = f"bench.latency.bars.p{shape.partitions}"
    bootstrap = settings.kafka.bootstrap_servers
    recreate(AdminClient({"bootstrap.servers": bootstrap, "log_level": 3}), topic, shape.partitions)
    benchdb.empty(settings)
    group = f"bench-latency-{uuid.uuid4().hex[:8]}"
    env = {**sink_env, "MDS_SINK_KAFKA__GROUP_ID": group, "MDS_SINK_TOPICS__BARS": topic, "MDS_SINK_TOPICS__QUOTES": ""}
    load = _Load(settings, topic, shape, int(rate * seconds))
    sink = Sink(env, log_dir / f"sink-{group}.log", group)
    watch = CommitWatch(bootstrap, group, [(topic, p) for p in range(shape.partitions)])
    kafka = _Watcher("bench-kafka-commits", lambda: {p: o for (_t, p), o in watch.committed().items()}, KAFKA_POLL_S)
    read_ledger, close_ledger = _ledger_reader(settings, group)
    ledger = _Watcher("bench-ledger", read_ledger, LEDGER_POLL_S)
    encoded = load.encode()
    try:
        sink.wait_ready(timeout_s=60)
        cpu0 = sink.sample().cpu_s
        kafka.start()
        ledger.start()
        wall_started = load.offer(rate, encoded)
        wanted = {p: records[-1][0] + 1 for p, records in load.produced.items()}
        deadline = time.monotonic() + 60
        while any(kafka.latest.get(p, -1) < end for p, end in wanted.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
        final = sink.sample()
        sink.save_metrics(log_dir / f"sink-{group}.metrics")
    finally:
        for watcher in (kafka, ledger):
            watcher.stop.set()
            if watcher.is_alive():
                watcher.join(timeout=10)
        watch.close()
        close_ledger()
        sink.stop()
    cutoff_ms = (wall_started + WARMUP_S) * 1000
    kept = {p: [(o, t) for o, t in records if t >= cutoff_ms] for p, records in load.produced.items()}
    return Latency(
        rate=rate,
        seconds=seconds,
        produced=sum(len(r) for r in load.produced.values()),
        kafka=_percentiles(kept, kafka.commits),
        ledger=_percentiles(kept, ledger.commits),
        max_ms_setting=int(env.get("MDS_SINK_BATCHING__MAX_MS", settings.batching.max_ms)),
        cpu_s=final.cpu_s - cpu0,
        peak_rss_mb=final.hwm_kb / 1024,
        notes=load.failed[:3],
    )
