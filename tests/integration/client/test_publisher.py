"""The publishers against the real broker and database: records read back from the topic exactly, rows the
sink writes from them exactly, backpressure that loses nothing, bad records refused before sending."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from mds_sink.client.errors import NotAcknowledged, RecordInvalid, RetryablePublishError
from mds_sink.client.publisher import AsyncPublisher, Deliveries, Delivery, Publisher
from mds_sink.client.records import Bar, Quote
from mds_sink.config.settings import load_settings
from tests.support import SCHEMAS, SESSION_START, drained, make_scenario, read_topic, running_sink, wait_until

START = datetime.fromtimestamp(SESSION_START, UTC)


def bars(tenant: str, symbol: str, n: int, first: int = 0) -> list[Bar]:
    return [
        Bar(
            tenant_id=tenant,
            vendor="polygon",
            symbol=symbol,
            timeframe="1m",
            ts=START + timedelta(minutes=m),
            open=100.0 + m,
            high=101.0 + m,
            low=99.0 + m,
            close=100.5 + m,
            volume=1000.0 + m,
        )
        for m in range(first, first + n)
    ]


def decoded(settings: Any, topic: str, record_name: str) -> list[tuple[bytes, dict[str, Any]]]:
    decoder = Decoder(load_schema_file(SCHEMAS / f"{record_name}.avsc"), LocalSchemas.from_dir(SCHEMAS))
    return [(m.key(), decoder.decode(m.value())) for m in read_topic(settings, topic)]


def test_published_records_are_on_the_topic_and_become_exactly_the_rows() -> None:
    scenario = make_scenario(partitions=2, tables=["bars", "quotes", "jobs"])
    tenant = scenario.add_tenant("pub")
    records = bars(tenant, "AAPL", 3)
    quote = Quote(
        tenant_id=tenant, vendor="polygon", symbol="AAPL", ts=START, bid=10.0, ask=10.2, bid_size=5, ask_size=7
    )
    with Publisher(scenario.settings) as publisher:
        futures = [publisher.publish(r) for r in records]
        quoted = publisher.publish(quote)
        job = publisher.enqueue_job(
            tenant_id=tenant, idempotency_key="refresh-1", job_type="refresh", payload={"days": 2}, requested_at=START
        )
        publisher.flush()
        deliveries = [f.result(0) for f in futures]  # flush returned: every future is complete
    assert [d.topic for d in deliveries] == [scenario.topic("bars")] * 3
    assert len({d.partition for d in deliveries}) == 1  # one key, one partition, in order
    assert [d.offset for d in deliveries] == sorted(d.offset for d in deliveries)
    assert isinstance(quoted.result(0), Delivery) and isinstance(job.result(0), Delivery)

    start_us = SESSION_START * 1_000_000
    assert decoded(scenario.settings, scenario.topic("bars"), "bar") == [
        (
            f"{tenant}|polygon|AAPL".encode(),
            {
                "tenant_id": tenant,
                "vendor": "polygon",
                "symbol": "AAPL",
                "timeframe": "1m",
                "ts": start_us + m * 60_000_000,
                "open": 100.0 + m,
                "high": 101.0 + m,
                "low": 99.0 + m,
                "close": 100.5 + m,
                "volume": 1000.0 + m,
                "vwap": None,
                "trade_count": None,
                "revision": 0,
            },
        )
        for m in range(3)
    ]
    assert decoded(scenario.settings, scenario.topic("jobs"), "job_request") == [
        (
            f"{tenant}|refresh-1".encode(),
            {
                "tenant_id": tenant,
                "idempotency_key": "refresh-1",
                "job_type": "refresh",
                "payload": '{"days": 2}',
                "priority": 0,
                "requested_at": start_us,
                "requested_by": None,
            },
        )
    ]

    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), timeout_s=60, what="the sink to commit every record")
    assert scenario.rows(tenant, "SELECT symbol, ts, open, high, low, close, volume FROM bars ORDER BY ts") == [
        ("AAPL", START + timedelta(minutes=m), 100.0 + m, 101.0 + m, 99.0 + m, 100.5 + m, 1000.0 + m) for m in range(3)
    ]
    assert scenario.rows(tenant, "SELECT symbol, bid, ask FROM quotes") == [("AAPL", 10.0, 10.2)]
    assert scenario.rows(tenant, "SELECT idempotency_key, job_type, payload, priority FROM jobs") == [
        ("refresh-1", "refresh", {"days": 2}, 0)
    ]


def test_a_bad_record_raises_before_sending_and_the_good_ones_still_go() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("pub")
    good, bad = bars(tenant, "MSFT", 2)
    broken = Bar(**{**good.fields(), "low": 200.0})
    with Publisher(scenario.settings) as publisher:
        publisher.publish(good)
        with pytest.raises(RecordInvalid) as raised:
            publisher.publish(broken)
        publisher.publish(bad)
    assert raised.value.field == "high"
    assert str(raised.value).startswith(f"bar {tenant}|polygon|MSFT ts={SESSION_START * 1_000_000}: ")
    assert [v["ts"] for _, v in decoded(scenario.settings, scenario.topic("bars"), "bar")] == [
        SESSION_START * 1_000_000,
        (SESSION_START + 60) * 1_000_000,
    ]


def test_the_async_publisher_under_backpressure_loses_nothing() -> None:
    scenario = make_scenario(partitions=3, tables=["bars"])
    tenant = scenario.add_tenant("pub")
    records = [b for symbol in ("A", "B", "C", "D") for b in bars(tenant, symbol, 500)]

    async def publish_all() -> Deliveries:
        # A queue of 10 records for 2,000: publish must wait for room again and again.
        async with AsyncPublisher(scenario.settings, queue_records=10) as publisher:
            confirmed = await publisher.publish_many(records)
            await publisher.flush()
            return await confirmed

    assert asyncio.run(asyncio.wait_for(publish_all(), timeout=120)) == Deliveries(2000)
    on_topic = sorted((v["symbol"], v["ts"]) for _, v in decoded(scenario.settings, scenario.topic("bars"), "bar"))
    assert on_topic == sorted((symbol, (SESSION_START + 60 * m) * 1_000_000) for symbol in "ABCD" for m in range(500))


def test_flush_raises_naming_each_record_the_broker_did_not_acknowledge() -> None:
    # A broker that does not exist: the records time out in the local queue, retryable, each named.
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:9", "producer_options": {"message.timeout.ms": 1000}},
        topics={"bars": "nowhere.bars"},
    )
    tenant = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
    publisher = Publisher(settings, flush_timeout_s=10)
    first, *rest = bars(tenant, "NVDA", 3)
    alone = publisher.publish(first)
    together = publisher.publish_many(rest)
    with pytest.raises(NotAcknowledged) as raised:
        publisher.flush()
    assert raised.value.retryable
    names = [f"bar {tenant}|polygon|NVDA ts={(SESSION_START + 60 * m) * 1_000_000}" for m in range(3)]
    assert sorted(f.record for f in raised.value.failures) == names
    assert isinstance(alone.exception(0), RetryablePublishError)
    both = together.exception(0)  # one confirmation for the call, naming each of its records
    assert isinstance(both, NotAcknowledged)
    assert sorted(f.record for f in both.failures) == names[1:]
    publisher.close()  # nothing left: the failures were reported by the flush above


def test_records_from_the_async_publisher_become_exactly_the_rows() -> None:
    scenario = make_scenario(partitions=2, tables=["bars", "jobs"])
    tenant = scenario.add_tenant("apub")
    records = bars(tenant, "AMD", 4) + bars(tenant, "INTC", 4)

    async def publish_all() -> None:
        async with AsyncPublisher(scenario.settings) as publisher:
            confirmed = await publisher.publish_many(records)
            job = await publisher.enqueue_job(
                tenant_id=tenant, idempotency_key="k", job_type="backfill", priority=5, requested_at=START
            )
            assert await confirmed == Deliveries(8)
            assert isinstance(await job, Delivery)

    asyncio.run(asyncio.wait_for(publish_all(), timeout=60))
    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), timeout_s=60, what="the sink to commit every record")
    assert scenario.rows(tenant, "SELECT symbol, ts, close, volume FROM bars ORDER BY symbol, ts") == [
        (symbol, START + timedelta(minutes=m), 100.5 + m, 1000.0 + m) for symbol in ("AMD", "INTC") for m in range(4)
    ]
    assert scenario.rows(tenant, "SELECT idempotency_key, job_type, payload, priority FROM jobs") == [
        ("k", "backfill", {}, 5)
    ]
