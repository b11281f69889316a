"""The flush thread: settled strictly in order, the next batch staged meanwhile; nothing settles behind a
failure; partitions no longer owned are dropped; a dead letter is produced once whatever the retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import psycopg

from mds_sink.config.settings import RetrySettings
from mds_sink.core.batcher import DeadLetter, Source, TableBatch
from mds_sink.core.rejection import Rejection
from mds_sink.core.tables import BARS
from mds_sink.db.writer import Staged, WriteResult
from mds_sink.sink.control import SinkState
from mds_sink.sink.flusher import Flusher
from mds_sink.sink.pipeline import Settled
from mds_sink.sink.pipeline import settle as settle_batch


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


def batch_of(partition: int, offset: int, *, epoch: int | None = None) -> TableBatch:
    b = TableBatch(BARS, 0.0)
    row = (offset, "t", "v", f"S{offset}", "1m", 1.0, 1.0, 1.0, 1.0, 1.0, None, None, 0)
    b.add(row, Source("bars", partition, offset), 10)
    if epoch is not None:
        b.fence = {("bars", partition): epoch}
    return b


def collect(flusher: Flusher, n: int, *, timeout_s: float = 5.0) -> list[Any]:
    done: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(done) < n and time.monotonic() < deadline:
        done += flusher.collect(timeout_s=0.05)
    return done


def test_nothing_settles_behind_a_failed_batch_and_its_staged_transaction_rolls_back() -> None:
    settled: list[int] = []
    discarded: list[int] = []

    class Ahead:
        def __init__(self, n: int) -> None:
            self.n = n

        def discard(self) -> None:
            discarded.append(self.n)

    def prepare(b: TableBatch) -> Staged:
        return cast(Staged, Ahead(next(iter(b.rows.values()))[1].offset))

    def settle(b: TableBatch, ahead: Staged | None) -> Settled:
        n = next(iter(b.rows.values()))[1].offset
        if n == 1:
            raise RuntimeError("permission denied for table bars_minute")  # neither poison nor transient
        settled.append(n)
        return Settled("bars", 1, [], dict(b.next_offsets))

    retry = RetrySettings(initial_backoff_s=0.001, max_backoff_s=0.001, unknown_error_attempts=2)
    flusher = Flusher(settle, retry=retry, state=SinkState(), depth=2, prepare=prepare)
    try:
        for n in range(4):
            flusher.submit(batch_of(0, n))
        done = collect(flusher, 2)
        assert flusher.failed.wait(5)
        deadline = time.monotonic() + 5
        while len(discarded) < 2 and time.monotonic() < deadline:  # the two batches behind it, begun ahead
            time.sleep(0.01)
    finally:
        flusher.close()
    assert [type(d).__name__ for d in done] == ["Settled", "FlushFailed"]
    assert done[0].next_offsets == {("bars", 0): 1}
    assert settled == [0]  # batches 2 and 3 never settled: their rows, ledger and offsets stay behind batch 1
    assert sorted(discarded) == [2, 3]


def test_a_batch_taken_after_a_partition_moved_away_keeps_only_the_partitions_still_owned() -> None:
    written: list[dict[tuple[str, int], int]] = []
    hold = threading.Event()

    def settle(b: TableBatch, ahead: Staged | None) -> Settled:
        if not hold.is_set():
            hold.wait(5)
        written.append(dict(b.next_offsets))
        return Settled("bars", len(b.rows), [], dict(b.next_offsets))

    flusher = Flusher(settle, retry=RetrySettings(), state=SinkState())
    try:
        flusher.own({("bars", 0): 1, ("bars", 1): 1})
        flusher.submit(batch_of(0, 0, epoch=1))  # held in settle
        mixed = batch_of(0, 1, epoch=1)
        mixed.add((9, "t", "v", "S9", "1m", 1.0, 1.0, 1.0, 1.0, 1.0, None, None, 0), Source("bars", 1, 9), 10)
        mixed.fence[("bars", 1)] = 1
        flusher.submit(mixed)
        flusher.own({("bars", 0): 1})  # bars[1] revoked (or lost) while the batch waited in the queue
        hold.set()
        done = collect(flusher, 2)
    finally:
        flusher.close()
    assert written == [{("bars", 0): 1}, {("bars", 0): 2}]
    assert [d.next_offsets for d in done] == [{("bars", 0): 1}, {("bars", 0): 2}]


def test_a_partition_assigned_again_under_a_new_epoch_drops_what_was_read_under_the_old_one() -> None:
    written: list[int] = []

    def settle(b: TableBatch, ahead: Staged | None) -> Settled:
        written.append(len(b.rows))
        return Settled("bars", len(b.rows), [], dict(b.next_offsets))

    flusher = Flusher(settle, retry=RetrySettings(), state=SinkState())
    try:
        flusher.own({("bars", 0): 2})  # revoked and claimed again (epoch 2) before the old batch was taken
        flusher.submit(batch_of(0, 0, epoch=1))
        done = collect(flusher, 1)
    finally:
        flusher.close()
    assert written == []  # nothing written: its records are re-delivered under the new epoch
    assert [(d.rows, d.next_offsets) for d in done] == [(0, {})]


def test_the_batch_being_retried_stops_once_none_of_its_partitions_is_owned_and_retries_resume_after() -> None:
    attempts: list[int] = []
    failing = threading.Event()

    def settle(b: TableBatch, ahead: Staged | None) -> Settled:
        n = next(iter(b.rows.values()))[1].offset
        attempts.append(n)
        if n == 0:
            failing.set()
            raise psycopg.OperationalError("connection refused")  # transient: retried
        if attempts.count(1) < 3:
            raise psycopg.OperationalError("connection refused")  # the next batch is retried again
        return Settled("bars", 1, [], dict(b.next_offsets))

    retry = RetrySettings(initial_backoff_s=0.01, max_backoff_s=60.0, breaker_threshold=100)
    flusher = Flusher(settle, retry=retry, state=SinkState())
    try:
        flusher.own({("bars", 0): 1, ("bars", 1): 1})
        flusher.submit(batch_of(0, 0, epoch=1))
        assert failing.wait(5)
        flusher.own({("bars", 1): 1})  # bars[0] given up past the drain deadline
        flusher.submit(batch_of(1, 1, epoch=1))
        done = collect(flusher, 2)
    finally:
        flusher.close()
    assert [type(d).__name__ for d in done] == ["Abandoned", "Settled"]
    assert done[0].partitions == frozenset({("bars", 0)})
    assert done[1].next_offsets == {("bars", 1): 2}
    assert attempts.count(1) == 3  # giving up the first batch did not turn retries off for the next
    assert not flusher.failed.is_set()


def test_a_dead_letter_is_produced_once_however_often_the_write_is_retried() -> None:
    sent: list[int] = []
    writes = 0

    class FlakyWriter:
        def write(self, spec: Any, rows: Any, next_offsets: Any, **_kw: Any) -> WriteResult:
            nonlocal writes
            writes += 1
            if writes <= 2:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return WriteResult(len(rows), 1)

    def send(dead: Sequence[DeadLetter]) -> None:
        sent.extend(d.source.offset for d in dead)

    b = batch_of(0, 0)
    b.reject(Source("bars", 0, 1), Rejection("validate", "ohlc_inconsistent", "high below low", "high"), 10)
    retry = RetrySettings(initial_backoff_s=0.001, max_backoff_s=0.001, breaker_threshold=100)
    flusher = Flusher(lambda batch, ahead: settle_batch(batch, FlakyWriter(), send), retry=retry, state=SinkState())
    try:
        flusher.submit(b)
        done = collect(flusher, 1)
    finally:
        flusher.close()
    assert writes == 3
    assert sent == [1]
    assert [(d.rows, [x.source.offset for x in d.dead_letters], d.next_offsets) for d in done] == [
        (1, [1], {("bars", 0): 2})
    ]
