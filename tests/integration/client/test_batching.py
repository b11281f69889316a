"""The batch publishers against the real broker: a batch goes when it has max_rows records or its oldest
has waited max_ms, nothing is dropped under backpressure, leaving the block sends and waits for the
rest, and a record that is not acknowledged is named."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from mds_sink.client.errors import NotAcknowledged, RecordInvalid
from mds_sink.client.publisher import AsyncPublisher, Deliveries, Publisher
from mds_sink.client.records import Bar
from mds_sink.config.settings import load_settings
from tests.integration.client.test_publisher import bars
from tests.support import SCHEMAS, SESSION_START, drained, make_scenario, read_topic, running_sink, wait_until

START = datetime.fromtimestamp(SESSION_START, UTC)
HOUR_MS = 3_600_000.0  # a max_ms no test waits for: only the row count (or the exit) sends


def on_topic(settings: Any, topic: str) -> list[tuple[str, int]]:
    """(symbol, minute) of every bar on the topic, in each partition's order."""
    decoder = Decoder(load_schema_file(SCHEMAS / "bar.avsc"), LocalSchemas.from_dir(SCHEMAS))
    found = []
    for m in read_topic(settings, topic):
        bar = decoder.decode(m.value())
        found.append((bar["symbol"], (bar["ts"] // 1_000_000 - SESSION_START) // 60))
    return found


def test_a_batch_goes_when_it_has_max_rows_and_the_rest_when_the_block_is_left() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("batch")
    records = bars(tenant, "AAPL", 250)
    with Publisher(scenario.settings) as publisher:
        with publisher.batched(max_rows=100, max_ms=HOUR_MS) as batch:
            futures = [batch.add(r) for r in records]
            first, second, third = futures[0], futures[100], futures[200]
            assert futures[:100] == [first] * 100  # one confirmation per batch
            assert first.result(30) == Deliveries(100)
            assert second.result(30) == Deliveries(100)
            # The last 50 wait for a 100th record or an hour: not sent yet.
            assert not third.done()
            assert on_topic(scenario.settings, scenario.topic("bars")) == [("AAPL", m) for m in range(200)]
        assert third.result(0) == Deliveries(50)  # leaving the block sent them and waited
    assert on_topic(scenario.settings, scenario.topic("bars")) == [("AAPL", m) for m in range(250)]


def test_a_batch_goes_when_its_oldest_record_has_waited_max_ms() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("batch")
    with Publisher(scenario.settings) as publisher, publisher.batched(max_rows=10_000, max_ms=300) as batch:
        added = time.monotonic()
        futures = [batch.add(r) for r in bars(tenant, "MSFT", 30)]
        assert futures[0].result(30) == Deliveries(30)  # no flush, no 10,000th record: its age sent it
        assert time.monotonic() - added >= 0.3
        later = batch.add(bars(tenant, "MSFT", 1, first=30)[0])
        assert later is not futures[0]
        assert later.result(30) == Deliveries(1)
        assert on_topic(scenario.settings, scenario.topic("bars")) == [("MSFT", m) for m in range(31)]


def test_a_bad_record_raises_at_add_and_is_not_buffered() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("batch")
    good = bars(tenant, "NVDA", 3)
    broken = Bar(**{**good[1].fields(), "low": 500.0})
    with Publisher(scenario.settings) as publisher, publisher.batched(max_rows=100, max_ms=HOUR_MS) as batch:
        batch.add(good[0])
        with pytest.raises(RecordInvalid) as raised:
            batch.add(broken)
        batch.add(good[2])
    assert raised.value.field == "high"
    assert on_topic(scenario.settings, scenario.topic("bars")) == [("NVDA", 0), ("NVDA", 2)]


def test_records_not_acknowledged_are_named_one_by_one() -> None:
    # A broker that does not exist: the records time out in the local queue, retryable, each named.
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:9", "producer_options": {"message.timeout.ms": 1000}},
        topics={"bars": "nowhere.bars"},
    )
    tenant = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
    names = [f"bar {tenant}|polygon|TSLA ts={(SESSION_START + 60 * m) * 1_000_000}" for m in range(5)]
    publisher = Publisher(settings, flush_timeout_s=10)
    batch = publisher.batched(max_rows=3, max_ms=HOUR_MS)
    futures = [batch.add(r) for r in bars(tenant, "TSLA", 5)]
    with pytest.raises(NotAcknowledged) as raised:
        batch.close()
    assert raised.value.retryable
    assert sorted(f.record for f in raised.value.failures) == names
    first, second = futures[0].exception(0), futures[3].exception(0)
    assert isinstance(first, NotAcknowledged) and isinstance(second, NotAcknowledged)
    assert sorted(f.record for f in first.failures) == names[:3]
    assert sorted(f.record for f in second.failures) == names[3:]
    publisher.close()  # nothing left: the failures were reported by the batch's close


def test_the_async_batch_publisher_under_backpressure_loses_nothing_and_the_sink_writes_every_row() -> None:
    scenario = make_scenario(partitions=3, tables=["bars"])
    tenant = scenario.add_tenant("abatch")
    symbols = ("A", "B", "C", "D")
    records = [b for s in symbols for b in bars(tenant, s, 500)]

    async def publish_all() -> list[Deliveries]:
        # A queue of 10 records, batches of 64: each batch waits for room again and again.
        async with AsyncPublisher(scenario.settings, queue_records=10) as publisher:
            async with publisher.batched(max_rows=64, max_ms=50) as batch:
                confirmations = {id(c): c for c in [await batch.add(r) for r in records]}
            return list(await asyncio.gather(*confirmations.values()))

    confirmed = asyncio.run(asyncio.wait_for(publish_all(), timeout=120))
    assert sum(c.records for c in confirmed) == 2000
    assert sorted(on_topic(scenario.settings, scenario.topic("bars"))) == [(s, m) for s in symbols for m in range(500)]
    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), timeout_s=60, what="the sink to commit every record")
    assert scenario.rows(tenant, "SELECT symbol, ts, close FROM bars ORDER BY symbol, ts") == [
        (s, START + timedelta(minutes=m), 100.5 + m) for s in symbols for m in range(500)
    ]


def test_the_async_batch_publisher_sends_by_age_without_a_flush() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("abatch")

    async def publish() -> tuple[Deliveries, float]:
        async with AsyncPublisher(scenario.settings) as publisher, publisher.batched(max_ms=200) as batch:
            added = time.monotonic()
            confirmations = [await batch.add(r) for r in bars(tenant, "AMD", 7)]
            assert all(c is confirmations[0] for c in confirmations)
            done = await confirmations[0]  # no flush, no 1,000th record: its age sent it
            return done, time.monotonic() - added

    done, waited = asyncio.run(asyncio.wait_for(publish(), timeout=60))
    assert done == Deliveries(7)
    assert waited >= 0.2
    assert on_topic(scenario.settings, scenario.topic("bars")) == [("AMD", m) for m in range(7)]
