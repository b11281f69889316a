"""The flush thread with a batch begun ahead: settled strictly in order, the next one staged meanwhile."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from mds_sink.batcher import Source, TableBatch
from mds_sink.flusher import Flusher
from mds_sink.pipeline import Settled
from mds_sink.settings import RetrySettings
from mds_sink.state import SinkState
from mds_sink.tables import BARS
from mds_sink.writer import Staged


def batch(n: int) -> TableBatch:
    b = TableBatch(BARS, 0.0)
    b.add((n, "t", "v", f"S{n}", "1m", 1.0, 1.0, 1.0, 1.0, 1.0, None, None, 0), Source("bars", 0, n), 10)
    return b


def test_batches_settle_in_order_while_the_next_one_is_begun_ahead() -> None:
    events: list[str] = []
    lock = threading.Lock()
    first_may_finish = threading.Event()

    def note(event: str) -> None:
        with lock:
            events.append(event)

    def prepare(b: TableBatch) -> Staged:
        n = next(iter(b.rows.values()))[1].offset
        note(f"stage {n}")
        return cast(Staged, n)  # the flusher only hands it on to settle

    def settle(b: TableBatch, ahead: Staged | None) -> Settled:
        n = next(iter(b.rows.values()))[1].offset
        staged = cast(Any, ahead)
        note(f"settle {n} (staged {staged})")
        if n == 0:
            first_may_finish.wait(5)
        return Settled("bars", 1, [], dict(b.next_offsets))

    flusher = Flusher(settle, retry=RetrySettings(), state=SinkState(), depth=2, prepare=prepare)
    try:
        for n in range(3):
            flusher.submit(batch(n))
        deadline = time.monotonic() + 5
        while "stage 1" not in events and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        # Batch 0 is being written (held here); batch 1 is begun meanwhile, batch 2 not yet (one at a time).
        assert events[0] == "stage 0"
        assert sorted(events[1:]) == ["settle 0 (staged 0)", "stage 1"]
        first_may_finish.set()
        done: list[Any] = []
        while len(done) < 3 and time.monotonic() < deadline:
            done += flusher.collect(timeout_s=0.1)
    finally:
        flusher.close()
    assert [d.next_offsets for d in done] == [{("bars", 0): 1}, {("bars", 0): 2}, {("bars", 0): 3}]
    assert [e for e in events if e.startswith("settle")] == [
        "settle 0 (staged 0)",
        "settle 1 (staged 1)",
        "settle 2 (staged 2)",
    ]
    assert events.index("stage 2") > 2


def test_without_prepare_nothing_is_begun_ahead() -> None:
    seen: list[Staged | None] = []

    def settle(b: TableBatch, ahead: Staged | None) -> Settled:
        seen.append(ahead)
        return Settled("bars", 1, [], dict(b.next_offsets))

    flusher = Flusher(settle, retry=RetrySettings(), state=SinkState())
    try:
        for n in range(3):
            flusher.submit(batch(n))
        done: list[Any] = []
        deadline = time.monotonic() + 5
        while len(done) < 3 and time.monotonic() < deadline:
            done += flusher.collect(timeout_s=0.1)
    finally:
        flusher.close()
    assert len(done) == 3
    assert seen == [None, None, None]
