"""The broker restarted while a Publisher publishes: every record it confirmed is in Kafka exactly once.

The publisher's producer is idempotent (kafka/clients.py): records it retries across the restart are
deduplicated by the broker, so the topic read back holds each confirmed record once and no record twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta

from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from mds_sink.client.errors import NotAcknowledged
from mds_sink.client.publisher import Deliveries, Publisher
from mds_sink.client.records import Bar
from mds_sink.kafka.clients import producer_config
from tests.support import SCHEMAS, SESSION_START, make_scenario, read_topic, stack, wait_until

TENANT = str(uuid.uuid4())  # the publisher checks its form; nothing here needs it in the database
START = datetime.fromtimestamp(SESSION_START, UTC)
CHUNK = 50  # records per publish_many call
MAX_CHUNKS = 2_000  # the publishing thread's bound: 100,000 records at most
PACE_S = 0.02  # between calls, so the stream spans the restart rather than finishing before it


def record(n: int) -> Bar:
    """Record n: its own second, so (symbol, ts) names it."""
    return Bar(
        tenant_id=TENANT,
        vendor="restart",
        symbol=f"S{n % 20}",
        timeframe="1m",
        ts=START + timedelta(seconds=n),
        open=10.0,
        high=11.0,
        low=9.0,
        close=10.5,
        volume=float(n),
    )


def name(n: int) -> str:
    """What a PublishError calls record n."""
    return f"bar {TENANT}|restart|S{n % 20} ts={(SESSION_START + n) * 1_000_000}"


class Stream:
    """Publishes CHUNK records per call, paced, until told to stop or MAX_CHUNKS calls are made."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.calls: list[tuple[float, range, Future[Deliveries]]] = []  # (when, records, confirmation)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="restart-stream", daemon=True)

    def _run(self) -> None:
        try:
            for i in range(MAX_CHUNKS):
                if self.stop.is_set():
                    return
                numbers = range(i * CHUNK, (i + 1) * CHUNK)
                future = self.publisher.publish_many(record(n) for n in numbers)
                self.calls.append((time.monotonic(), numbers, future))
                self.stop.wait(PACE_S)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def confirmed_after(self, moment: float) -> int:
        return sum(1 for when, _, f in list(self.calls) if when > moment and f.done() and f.exception() is None)


def test_a_broker_restart_during_publishing_keeps_every_confirmed_record_exactly_once() -> None:
    scenario = make_scenario(partitions=3, tables=["bars"])
    assert producer_config(scenario.settings)["enable.idempotence"] is True
    topic = scenario.topic("bars")
    publisher = Publisher(scenario.settings, flush_timeout_s=120)
    stream = Stream(publisher)
    try:
        stream.thread.start()
        wait_until(lambda: stream.confirmed_after(0.0) >= 10, timeout_s=60, what="records confirmed before")
        restart_began = time.monotonic()
        stack("restart-kafka")
        restart_ended = time.monotonic()
        # The broker is back: records published after it are confirmed, so the producer recovered.
        wait_until(lambda: stream.confirmed_after(restart_ended) >= 10, timeout_s=120, what="records confirmed after")
    finally:
        stream.stop.set()
        stream.thread.join(timeout=60)
    assert stream.error is None, stream.error
    assert not stream.thread.is_alive()
    failures: list[str] = []
    try:
        publisher.close()
    except NotAcknowledged as exc:
        failures = [f.record for f in exc.failures]

    published = [n for _, numbers, _ in stream.calls for n in numbers]
    during = [when for when, _, _ in stream.calls if restart_began < when < restart_ended]
    assert during, "no record was published while the broker restarted"
    confirmed: list[int] = []
    for _, numbers, future in stream.calls:
        error = future.exception(0)  # closed above: every confirmation is complete
        if error is None:
            assert future.result(0) == Deliveries(len(numbers))
            confirmed += numbers
        else:
            assert isinstance(error, NotAcknowledged)
            refused = {f.record for f in error.failures}
            confirmed += [n for n in numbers if name(n) not in refused]
    assert confirmed, "nothing was confirmed"
    assert len(confirmed) + len(failures) == len(published)  # each record is one or the other

    decoder = Decoder(load_schema_file(SCHEMAS / "bar.avsc"), LocalSchemas.from_dir(SCHEMAS))
    start_us = SESSION_START * 1_000_000
    on_topic = Counter(
        (decoder.decode(m.value())["ts"] - start_us) // 1_000_000
        for m in read_topic(scenario.settings, topic, timeout_s=120)
    )
    assert not [n for n, count in on_topic.items() if count > 1], "records stored more than once"
    assert [n for n in confirmed if on_topic[n] != 1] == [], "confirmed records missing from the topic"
    assert set(on_topic) <= set(published)
