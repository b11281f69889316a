"""Helpers for tests against the real local stack (deploy/local/stack.sh): topics, tenants, records, a sink."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mds_sink.client.produce import RecordEncoder, encoder_for
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import Settings, load_settings
from mds_sink.core.catalog import TABLES
from mds_sink.kafka.clients import admin_config, consumer_config, ensure_topics, producer_config, watermarks
from mds_sink.service import Service
from mds_sink.sink.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack.sh"
SCHEMAS = resource_dir("schemas")


def stack(*args: str) -> str:
    """Run deploy/local/stack.sh; its stdout (export lines for `up`/`env`) is returned."""
    done = subprocess.run(["bash", str(STACK), *args], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stack.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def parse_exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip("'\"")
    return env


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Scenario:
    """One test's own world: topics, a consumer group and tenants nobody else uses."""

    settings: Settings
    tenants: dict[str, str] = field(default_factory=dict)  # name -> id

    @property
    def owner_url(self) -> str:
        assert self.settings.database.owner_url is not None
        return self.settings.database.owner_url.get_secret_value()

    @property
    def reader_url(self) -> str:
        assert self.settings.database.reader_url is not None
        return self.settings.database.reader_url.get_secret_value()

    @property
    def writer_url(self) -> str:
        return self.settings.database.url.get_secret_value()

    def topic(self, table: str) -> str:
        topic: str = getattr(self.settings.topics, table)
        return topic

    def add_tenant(self, name: str, *, active: bool = True) -> str:
        tenant_id = str(uuid.uuid4())
        with psycopg.connect(self.owner_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO tenants (tenant_id, name, active) VALUES (%s, %s, %s)", (tenant_id, unique(name), active)
            )
        self.tenants[name] = tenant_id
        return tenant_id

    def encoder(self, table: str) -> RecordEncoder:
        return encoder_for(TABLES[table], SCHEMAS)

    def produce(self, table: str, records: Iterable[Mapping[str, Any]], *, raw: Iterable[bytes] = ()) -> int:
        """Encode and produce records (plus raw values as they are); waits for acknowledgement."""
        encoder = self.encoder(table)
        producer = Producer(producer_config(self.settings))
        n = 0
        for record in records:
            producer.produce(self.topic(table), key=encoder.key(dict(record)), value=encoder.encode(dict(record)))
            n += 1
        for value in raw:
            producer.produce(self.topic(table), key=b"raw", value=value)
            n += 1
        assert producer.flush(30) == 0
        return n

    def produce_values(
        self, table: str, items: Iterable[tuple[bytes | None, bytes | None]], *, partition: int | None = None
    ) -> None:
        producer = Producer(producer_config(self.settings))
        for key, value in items:
            if partition is None:
                producer.produce(self.topic(table), key=key, value=value)
            else:
                producer.produce(self.topic(table), key=key, value=value, partition=partition)
        assert producer.flush(30) == 0

    def end_offsets(self) -> dict[tuple[str, int], int]:
        return {
            tp: high for tp, (_low, high) in watermarks(self.settings, self.settings.topics.table_by_topic()).items()
        }

    def committed(self) -> dict[tuple[str, int], int]:
        consumer = Consumer(consumer_config(self.settings))
        try:
            parts = [TopicPartition(t, p) for (t, p) in self.end_offsets()]
            return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=10)}
        finally:
            consumer.close()

    def rows(
        self, tenant: str | None, sql: str, params: tuple[Any, ...] = (), *, url: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run a query as the reader (or `url`) with the tenant context set (None: no context)."""
        with psycopg.connect(url or self.reader_url) as conn, conn.transaction():
            if tenant is not None:
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            return conn.execute(sql, params).fetchall()

    def dead_letters_of(self, topic: str, *, expect: int, timeout_s: float = 30.0) -> list[Any]:
        """Read `expect` dead letters of a dead-letter topic by name (tenant-scoped topics share one per type)."""
        consumer = Consumer({**consumer_config(self.settings), "group.id": unique("dlq-reader")})
        consumer.subscribe([topic])
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(found) < expect and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    found.append(msg)
            extra_deadline = time.monotonic() + 1.0  # anything beyond the expected count is returned too
            while time.monotonic() < extra_deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    found.append(msg)
        finally:
            consumer.close()
        return found

    def dead_letters(self, source_table: str, *, expect: int, timeout_s: float = 30.0) -> list[Any]:
        """Read `expect` dead letters of a source topic (fails if fewer arrive in time)."""
        topic = self.settings.topics.dead_letter.replace("{topic}", self.topic(source_table))
        consumer = Consumer({**consumer_config(self.settings), "group.id": unique("dlq-reader")})
        consumer.subscribe([topic])
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(found) < expect and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    found.append(msg)
            # Anything beyond the expected count is a failure too: give it a moment to show up.
            extra_deadline = time.monotonic() + 1.0
            while time.monotonic() < extra_deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    found.append(msg)
        finally:
            consumer.close()
        return found


def make_scenario(partitions: int = 3, tables: Iterable[str] = tuple(TABLES), **overrides: Any) -> Scenario:
    wanted = set(tables)
    run = unique("t")
    topics = {table: (f"{run}.{table}" if table in wanted else "") for table in TABLES}
    settings = load_settings(
        kafka={
            "bootstrap_servers": os.environ["MDS_SINK_KAFKA__BOOTSTRAP_SERVERS"],
            "group_id": f"{run}.sink",
            **overrides.pop("kafka", {}),
        },
        topics={**topics, **overrides.pop("topics", {})},
        batching={"max_rows": 500, "max_ms": 200, **overrides.pop("batching", {})},
        shutdown_deadline_s=overrides.pop("shutdown_deadline_s", 30.0),
        http={"port": 0, **overrides.pop("http", {})},
        **overrides,
    )
    ensure_topics(AdminClient(admin_config(settings)), {t: partitions for t in settings.topics.table_by_topic()}, {})
    return Scenario(settings)


@contextmanager
def running_sink(settings: Settings) -> Iterator[Worker]:
    """A sink (the service, as `mds-sink run` builds it) in a thread of this process; stopped (drained)
    when the block ends. Yields its worker: state, stopping, ready(), and the key of side_port()."""
    service = Service(settings)
    worker = service.worker
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced to the test below, and to drained() at once
            errors.append(exc)
            CRASHED[id(worker)] = exc

    thread = threading.Thread(target=run, name="test-sink", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stopping.set()
        thread.join(timeout=settings.shutdown_deadline_s + 15)
    assert not thread.is_alive(), "the sink did not stop within its drain deadline"
    if errors:
        raise errors[0]


def wait_until(predicate: Any, *, timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll a condition the test states explicitly; fail with `what` if it never holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


CRASHED: dict[int, BaseException] = {}


def drained(worker: Worker, ends: Mapping[tuple[str, int], int]) -> bool:
    """Every partition with records has its end offset committed by this worker (which must be alive)."""
    crash = CRASHED.get(id(worker))
    if crash is not None:
        raise AssertionError(f"the sink stopped: {crash}") from crash
    return all(worker.state.committed.get(tp, 0) >= end for tp, end in ends.items() if end > 0)


def iso_ts(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


SESSION_START = 1_763_650_800  # 2025-11-20 15:00 UTC: a fixed past session, never "in the future"


def bar(
    tenant: str,
    symbol: str,
    minute: int,
    *,
    close: float = 100.0,
    revision: int = 0,
    timeframe: str = "1m",
    vendor: str = "polygon",
    volume: float = 1000.0,
) -> dict[str, Any]:
    """A consistent OHLCV bar around `close`."""
    return {
        "tenant_id": tenant,
        "vendor": vendor,
        "symbol": symbol,
        "timeframe": timeframe,
        "ts": iso_ts(SESSION_START + 60 * minute),
        "open": close - 0.5,
        "high": close + 1.0,
        "low": close - 1.0,
        "close": close,
        "volume": volume,
        "vwap": close,
        "trade_count": 10,
        "revision": revision,
    }


def sink_env(settings: Settings) -> dict[str, str]:
    """Environment for a `mds-sink run` subprocess with this scenario's group, topics and batching."""
    env = dict(os.environ)
    env["MDS_SINK_KAFKA__GROUP_ID"] = settings.kafka.group_id
    for table, topic in settings.topics.model_dump().items():
        env[f"MDS_SINK_TOPICS__{table.upper()}"] = str(topic)  # tenant_topics is a bool
    for group in ("batching", "retry"):
        for name, value in getattr(settings, group).model_dump().items():
            env[f"MDS_SINK_{group.upper()}__{name.upper()}"] = str(value)
    for name in ("session_timeout_ms", "max_poll_interval_ms"):
        env[f"MDS_SINK_KAFKA__{name.upper()}"] = str(getattr(settings.kafka, name))
    env["MDS_SINK_HTTP__PORT"] = "0"
    env["MDS_SINK_SHUTDOWN_DEADLINE_S"] = str(settings.shutdown_deadline_s)
    env["MDS_SINK_LOG__LEVEL"] = os.environ.get("MDS_TEST_SINK_LOG_LEVEL", "INFO")
    return env


def start_sink_process(
    settings: Settings, log_path: Path, *, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "mds_sink", "run"],
            env={**sink_env(settings), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def read_topic(settings: Settings, topic: str, *, timeout_s: float = 30.0) -> list[Any]:
    """Every message of a topic, from the beginning to its end as of now."""
    consumer = Consumer({**consumer_config(settings), "group.id": unique("reader")})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    found.append(msg)
                    if (msg.offset() or 0) + 1 >= ends.get(msg.partition() or 0, 0):
                        ends.pop(msg.partition(), None)
        assert not ends, f"{topic}: partitions {sorted(ends)} not read to their end in {timeout_s:.0f}s"
        return found
    finally:
        consumer.close()
