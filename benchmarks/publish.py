"""Publish throughput in one process, encode and produce until acknowledged, on the same bars:

- `Publisher.publish_many` and `AsyncPublisher.publish_many` (typed records, validated by the sink's
  rules, local schema ids; one confirmation for all of them, checked);
- `mds-sink produce`'s path (NDJSON lines from memory through a batch publisher of the same core);
- confluent-kafka's own `AvroSerializer` with a `Producer` (a registry's id; records as dicts with
  datetimes), the reference the issue compares against.

    eval "$(deploy/local/stack.sh env)"
    python -m benchmarks.publish --records 100000 --repeat 5
    deploy/local/registry/registry.sh up           # optional: the AvroSerializer with a real registry
    python -m benchmarks.publish --registry "$(deploy/local/registry/registry.sh url)"

`--repeat` rounds, each running every mode once (interleaved) to a fresh topic of 12 partitions; each
line gives the median and the range of records per second, and the last two the publishers' ratio to
the AvroSerializer within each round. Without `--registry` the AvroSerializer uses confluent-kafka's
in-process mock registry: the schema is registered once either way, and per record it does the same
work.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from mds_sink.client.produce import publish
from mds_sink.client.publisher import AsyncPublisher, Deliveries, Publisher
from mds_sink.client.records import Bar
from mds_sink.config.settings import Settings, load_settings
from mds_sink.core.catalog import TABLES
from mds_sink.kafka.clients import admin_config, ensure_topics, producer_config

TENANTS = [str(uuid.UUID(int=i + 1)) for i in range(8)]
START = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
SERIALIZER = "confluent-kafka AvroSerializer + Producer"


def bars(n: int) -> list[Bar]:
    return [
        Bar(
            tenant_id=TENANTS[i % 8],
            vendor="bench",
            symbol=f"S{i % 2000:04d}",
            timeframe="1m",
            ts=START + timedelta(minutes=i // 2000),
            open=100.0,
            high=101.0,
            low=99.0,
            close=100.5,
            volume=1000.0 + i,
        )
        for i in range(n)
    ]


def fresh(settings: Settings) -> Settings:
    topic = f"bench.publish.{uuid.uuid4().hex[:8]}"
    ensure_topics(AdminClient(admin_config(settings)), {topic: 12}, {})
    return settings.model_copy(update={"topics": settings.topics.model_copy(update={"bars": topic})})


def sync_publisher(settings: Settings, records: list[Bar]) -> None:
    with Publisher(settings) as publisher:
        confirmed = publisher.publish_many(records)
    assert confirmed.result(0) == Deliveries(len(records))  # leaving the block waited for every one


def async_publisher(settings: Settings, records: list[Bar]) -> None:
    async def run() -> None:
        async with AsyncPublisher(settings) as publisher:
            confirmed = await publisher.publish_many(records)
        assert await confirmed == Deliveries(len(records))

    asyncio.run(run())


def produce_command(settings: Settings, records: list[Bar]) -> None:
    def line(b: Bar) -> str:
        fields = b.fields()
        fields["ts"] = fields["ts"].isoformat()
        return json.dumps(fields)

    text = io.StringIO("\n".join(line(b) for b in records))  # built outside the timing would be fairer;
    publish(settings, TABLES["bars"], text, schemas_dir=settings.schemas)  # the command reads text, so it counts


def avro_serializer(registry: str) -> Callable[[Settings, list[Bar]], None]:
    def run(settings: Settings, records: list[Bar]) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415
        from confluent_kafka.schema_registry.avro import AvroSerializer  # noqa: PLC0415
        from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: PLC0415

        schema = (settings.schemas / "bar.avsc").read_text()
        serializer = AvroSerializer(SchemaRegistryClient.new_client({"url": registry}), schema)
        topic = settings.topics.bars  # type: ignore[attr-defined]
        context = SerializationContext(topic, MessageField.VALUE)
        producer = Producer(producer_config(settings))
        for b in records:
            value: dict[str, Any] = b.fields()
            key = f"{value['tenant_id']}|{value['vendor']}|{value['symbol']}".encode()
            data = serializer(value, context)
            while True:
                try:
                    producer.produce(topic, key=key, value=data)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(60) == 0

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--registry",
        default="mock://bench",
        help="a Confluent-compatible registry's URL for the AvroSerializer line; by default confluent-kafka's "
        "in-process mock (it registers the schema once; per record the serializer does the same work)",
    )
    args = parser.parse_args()
    settings = load_settings()
    records = bars(args.records)
    modes: dict[str, Callable[[Settings, list[Bar]], None]] = {
        "Publisher": sync_publisher,
        "AsyncPublisher": async_publisher,
        "mds-sink produce (NDJSON from memory)": produce_command,
    }
    if args.registry:
        modes[SERIALIZER] = avro_serializer(args.registry)
    # Rounds interleave the modes, so a busy moment of the machine falls on all of them alike.
    rates: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.repeat):
        for name, run in modes.items():
            target = fresh(settings)
            began = time.perf_counter()
            run(target, records)
            rates[name].append(len(records) / (time.perf_counter() - began))
    print(f"{len(records):,} bars, {args.repeat} interleaved rounds: median (min-max) records/s", flush=True)
    for name, got in rates.items():
        print(f"{name:<45} {statistics.median(got):>10,.0f}  ({min(got):,.0f}-{max(got):,.0f})", flush=True)
    reference = rates.get(SERIALIZER)
    if reference:
        for name in ("Publisher", "AsyncPublisher"):
            ratios = [mine / theirs for mine, theirs in zip(rates[name], reference, strict=True)]
            print(
                f"{name + ' / AvroSerializer, same round':<45} {statistics.median(ratios):>10.2f}x "
                f"({min(ratios):.2f}-{max(ratios):.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
