"""The flush thread: settles batches one at a time, in order, retrying transient failures.

It runs beside the consumer loop, so the database write of one batch overlaps the decoding of the
next, and a slow or unavailable database never keeps the consumer from polling. With `prepare`, a
stager thread begins each batch's transaction (its COPY into the session's own staging table) while
the batch before is written; upserts and commits still happen one batch at a time, in order.

Ordered settlement: once a batch fails, nothing behind it settles (its staged transaction rolls
back), so no later row, ledger offset or Kafka offset of the same partitions can pass the failed
batch; the worker stops and a restart re-delivers from it.

Ownership: the worker tells the flusher which partitions it owns, under which epoch. A batch taken
from the queue loses the records of partitions no longer owned under the epoch they were read in;
the batch being written stops retrying once none of its partitions is owned, and if it then fails it
is abandoned (nothing of it committed, and no owned partition depends on it), not fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential_jitter,
)

from mds_sink.config.settings import RetrySettings
from mds_sink.core.batcher import TableBatch, TopicPartition
from mds_sink.db.classify import classify
from mds_sink.db.writer import Staged
from mds_sink.errors import ErrorClass, first_line
from mds_sink.metrics import BATCH_BYTES, BATCH_ROWS, BREAKER_OPEN, LAST_FLUSH, RETRIES, ROWS_WRITTEN
from mds_sink.sink.control import LastFlush, SinkState
from mds_sink.sink.pipeline import Settled

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlushFailed:
    """A batch that could not be settled: the worker must stop without committing it or anything after it."""

    table: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A batch of partitions this member no longer owns that did not settle: nothing of it committed,
    and the member that owns them now re-delivers its records from the ledger."""

    table: str
    partitions: frozenset[TopicPartition]
    error: BaseException


Done = Settled | Abandoned | FlushFailed


class Flusher:
    def __init__(
        self,
        settle: Callable[[TableBatch, Staged | None], Settled],
        *,
        retry: RetrySettings,
        state: SinkState,
        depth: int = 2,
        on_retry: Callable[[str, BaseException], None] = lambda _t, _e: None,
        prepare: Callable[[TableBatch], Staged] | None = None,
    ) -> None:
        self._settle = settle
        self._prepare = prepare
        self._retry = retry
        self._state = state
        self._on_retry = on_retry
        self._todo: queue.Queue[TableBatch | None] = queue.Queue(maxsize=depth)
        self._done: queue.Queue[Done] = queue.Queue()
        # With `prepare`: batches begun by the stager, one at a time (the slot), waiting for their turn.
        self._ready: queue.Queue[tuple[TableBatch, Staged | None] | None] = queue.Queue(maxsize=1)
        self._slot = threading.Semaphore(1)
        self._pending = 0
        self._lock = threading.Lock()
        self.failed = threading.Event()  # set at the first batch that failed: nothing settles after it
        self._owned: dict[TopicPartition, int] = {}  # partition -> epoch, as the worker last said
        self._current: TableBatch | None = None  # the batch being settled
        self._give_up = threading.Event()  # the current batch stops retrying (cleared for the next)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mds-flush", daemon=True)
        self._thread.start()
        if prepare is not None:
            threading.Thread(target=self._stage, name="mds-stage", daemon=True).start()

    @property
    def pending(self) -> int:
        """Batches submitted and not yet collected."""
        with self._lock:
            return self._pending

    def has_room(self) -> bool:
        return not self._todo.full()

    def submit(self, batch: TableBatch) -> None:
        with self._lock:
            self._pending += 1
        self._todo.put(batch)

    def own(self, owned: Mapping[TopicPartition, int]) -> None:
        """The partitions this member owns now, with the epoch of each (after every rebalance)."""
        with self._lock:
            self._owned = dict(owned)
            current = self._current
            if current is not None and not self._owns_any(current):
                self._give_up.set()  # nothing of it is ours to write any more: stop retrying it

    def _owns_any(self, batch: TableBatch) -> bool:
        return any(self._owned.get(tp) == batch.fence.get(tp) for tp in batch.partitions)

    def _owned_part(self, batch: TableBatch) -> TableBatch:
        """The batch less the records of partitions not owned under the epoch they were read in."""
        with self._lock:
            gone = {tp for tp in batch.partitions if self._owned.get(tp) != batch.fence.get(tp)}
        if not gone:
            return batch
        kept, dropped = batch.without(gone)
        log.info("dropped %d records of %s: no longer owned by this member", dropped, sorted(gone))
        return kept if kept is not None else TableBatch(batch.spec, batch.started_ms)

    def collect(self, timeout_s: float = 0.0) -> list[Done]:
        out: list[Done] = []
        try:
            out.append(self._done.get(timeout=timeout_s) if timeout_s > 0 else self._done.get_nowait())
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            self._pending -= len(out)
        return out

    def close(self) -> None:
        self._closing = True
        self._give_up.set()
        self._todo.put(None)
        self._thread.join(timeout=5)

    def _stage(self) -> None:
        """The stager thread: begin each batch's transaction (its COPY) while the one before is written."""
        assert self._prepare is not None
        while True:
            self._slot.acquire()  # at most one batch begun and waiting: one extra connection
            batch = self._todo.get()
            if batch is None:
                self._ready.put(None)
                return
            try:
                staged: Staged | None = self._prepare(batch)
            except Exception as exc:  # the write begins again in its turn, and meets (and classifies) this
                log.debug("could not begin the flush of %s ahead: %s", batch.spec.name, exc)
                staged = None
            self._ready.put((batch, staged))

    def _next(self) -> tuple[TableBatch, Staged | None] | None:
        if self._prepare is None:
            batch = self._todo.get()
            return None if batch is None else (batch, None)
        item = self._ready.get()
        self._slot.release()
        return item

    def _run(self) -> None:
        while (item := self._next()) is not None:
            batch, ahead = item
            if self.failed.is_set():
                # Ordered settlement: a batch behind a failed one never commits (its COPY rolls back).
                if ahead is not None:
                    ahead.discard()
                continue
            self._settle_one(self._owned_part(batch), ahead)

    def _settle_one(self, batch: TableBatch, ahead: Staged | None) -> None:
        if not batch.records:  # every record of it belonged to partitions given up
            if ahead is not None:
                ahead.discard()
            self._done.put(Settled(batch.spec.name, 0, [], {}))
            return
        with self._lock:
            self._current = batch
            self._give_up.clear()
            if not self._closing and not self._owns_any(batch):
                self._give_up.set()
        started = time.monotonic()
        try:
            settled = self._settle_retrying(batch, ahead)
        except BaseException as exc:
            with self._lock:
                self._current = None
                abandoned = not self._closing and not self._owns_any(batch)
            if abandoned:
                log.warning(
                    "flush of %s abandoned: its partitions %s moved to another member (%s)",
                    batch.spec.name,
                    sorted(batch.partitions),
                    first_line(exc),
                )
                self._done.put(Abandoned(batch.spec.name, frozenset(batch.partitions), exc))
                return
            self.failed.set()
            self._state.last_error = f"{batch.spec.name}: {exc}"
            self._done.put(FlushFailed(batch.spec.name, exc))
            return
        with self._lock:
            self._current = None
        now = time.time()
        self._state.last_flush = LastFlush(
            settled.table, now, settled.rows, len(settled.dead_letters), time.monotonic() - started
        )
        ROWS_WRITTEN.labels(settled.table).inc(settled.rows)
        BATCH_ROWS.labels(settled.table).observe(settled.rows)
        BATCH_BYTES.labels(settled.table).observe(batch.bytes)
        LAST_FLUSH.set(now)
        self._done.put(replace(settled, newest_event_us=_newest_event_us(batch)))

    def _should_retry(self, exc: BaseException) -> bool:
        kind = classify(exc)
        return kind is ErrorClass.TRANSIENT or (
            kind is ErrorClass.UNKNOWN and self._unknown_attempts < self._retry.unknown_error_attempts
        )

    def _before_sleep(self, call: RetryCallState) -> None:
        exc = call.outcome.exception() if call.outcome else None
        if exc is None:
            return
        if classify(exc) is ErrorClass.UNKNOWN:
            self._unknown_attempts += 1
        self._failures += 1
        if self._failures >= self._retry.breaker_threshold and not self._state.breaker_open:
            self._state.breaker_open = True
            BREAKER_OPEN.set(1)
            log.error("circuit breaker open after %d failures in a row; backing off", self._failures)
        self._state.database_ok = False
        self._state.last_error = first_line(exc)
        log.warning(
            "flush failed (%s), retrying in %.1fs: %s",
            classify(exc).value,
            call.next_action.sleep if call.next_action else 0.0,
            self._state.last_error,
        )
        RETRIES.labels(classify(exc).value).inc()
        self._on_retry(classify(exc).value, exc)

    def _backoff(self, seconds: float) -> None:
        self._give_up.wait(seconds)  # giving up ends the wait between attempts too

    def _settle_retrying(self, batch: TableBatch, ahead: Staged | None) -> Settled:
        self._unknown_attempts = 0
        self._failures = 0
        retrying = Retrying(
            retry=retry_if_exception(self._should_retry),
            wait=wait_exponential_jitter(multiplier=self._retry.initial_backoff_s, max=self._retry.max_backoff_s),
            stop=stop_when_event_set(self._give_up),
            sleep=self._backoff,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        settled: Settled = retrying(self._settle, batch, ahead)
        if self._state.breaker_open:
            log.info("database is back: circuit breaker closed")
        self._state.breaker_open = False
        BREAKER_OPEN.set(0)
        self._state.database_ok = True
        return settled


def _newest_event_us(batch: TableBatch) -> dict[str, int]:
    """Newest event time written per topic, for the freshness gauge (folded in by the consumer thread)."""
    column = batch.spec.time_column
    if column is None or not batch.rows:
        return {}
    at = batch.spec.column_names.index(column)
    newest = max(row[at] for row, _ in batch.rows.values())
    newest_us = newest * 86_400_000_000 if batch.spec.column(column).pg_type == "date" else newest
    return {topic: newest_us for topic, _partition in batch.partitions}
