"""The flush thread: settles batches one at a time, in order, retrying transient failures.

It runs beside the consumer loop, so the database write of one batch overlaps the decoding of the
next, and a slow or unavailable database never keeps the consumer from polling. With `prepare`, a
stager thread begins each batch's transaction (its COPY into the session's own staging table) while
the batch before is written; upserts and commits still happen one batch at a time, in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential_jitter,
)

from mds_sink.batcher import TableBatch
from mds_sink.errors import ErrorClass, classify
from mds_sink.metrics import BATCH_BYTES, BATCH_ROWS, BREAKER_OPEN, LAST_FLUSH, RETRIES, ROWS_WRITTEN
from mds_sink.pipeline import Settled
from mds_sink.settings import RetrySettings
from mds_sink.state import LastFlush, SinkState
from mds_sink.writer import Staged

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlushFailed:
    """A batch that could not be settled: the worker must stop without committing it."""

    table: str
    error: BaseException


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
        self._done: queue.Queue[Settled | FlushFailed] = queue.Queue()
        # With `prepare`: batches begun by the stager, one at a time (the slot), waiting for their turn.
        self._ready: queue.Queue[tuple[TableBatch, Staged | None] | None] = queue.Queue(maxsize=1)
        self._slot = threading.Semaphore(1)
        self._pending = 0
        self._lock = threading.Lock()
        self.newest_event_us: dict[str, int] = {}
        self.abort = threading.Event()  # set when the drain deadline passes: give up retrying
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

    def collect(self, timeout_s: float = 0.0) -> list[Settled | FlushFailed]:
        out: list[Settled | FlushFailed] = []
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
        self.abort.set()
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
            self._settle_one(*item)

    def _settle_one(self, batch: TableBatch, ahead: Staged | None) -> None:
        started = time.monotonic()
        try:
            settled = self._settle_retrying(batch, ahead)
        except BaseException as exc:
            self._state.last_error = f"{batch.spec.name}: {exc}"
            self._done.put(FlushFailed(batch.spec.name, exc))
            return
        now = time.time()
        self._state.last_flush = LastFlush(
            settled.table, now, settled.rows, len(settled.dead_letters), time.monotonic() - started
        )
        ROWS_WRITTEN.labels(settled.table).inc(settled.rows)
        BATCH_ROWS.labels(settled.table).observe(settled.rows)
        BATCH_BYTES.labels(settled.table).observe(batch.bytes)
        LAST_FLUSH.set(now)
        self._record_newest(batch)
        self._done.put(settled)

    def _record_newest(self, batch: TableBatch) -> None:
        """Newest event time written per topic, for the freshness gauge."""
        column = batch.spec.time_column
        if column is None or not batch.rows:
            return
        at = batch.spec.column_names.index(column)
        newest = max(row[at] for row, _ in batch.rows.values())
        newest_us = newest * 86_400_000_000 if batch.spec.column(column).pg_type == "date" else newest
        for topic, _partition in batch.partitions:
            if newest_us > self.newest_event_us.get(topic, -1):
                self.newest_event_us[topic] = newest_us

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
        self._state.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning(
            "flush failed (%s), retrying in %.1fs: %s",
            classify(exc).value,
            call.next_action.sleep if call.next_action else 0.0,
            self._state.last_error,
        )
        RETRIES.labels(classify(exc).value).inc()
        self._on_retry(classify(exc).value, exc)

    def _settle_retrying(self, batch: TableBatch, ahead: Staged | None) -> Settled:
        self._unknown_attempts = 0
        self._failures = 0
        retrying = Retrying(
            retry=retry_if_exception(self._should_retry),
            wait=wait_exponential_jitter(multiplier=self._retry.initial_backoff_s, max=self._retry.max_backoff_s),
            stop=stop_when_event_set(self.abort),
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
