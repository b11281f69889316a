"""Batch publishers: records buffered and sent when `max_rows` are waiting or the oldest has waited `max_ms`.

    with publisher.batched(max_rows=1_000, max_ms=100) as batch:
        for bar in feed:
            batch.add(bar)        # checked now (RecordInvalid raises here); sent with its batch
    # leaving the block sent the rest and waited: every record acknowledged, or NotAcknowledged naming each

A record is checked when it is added, so a bad one raises at once and is never buffered. A batch goes
to the producer in one call and gets one confirmation (`add` returns its future): the least a record
costs to publish and confirm. Sending blocks (or, async, awaits) while the producer's queue is full, and
`add` waits meanwhile: nothing is ever dropped. `flush()` sends what is buffered and waits for every
record, as the publisher's does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from types import TracebackType

from mds_sink.client.core import Message, PublisherCore, send_awaiting, send_blocking
from mds_sink.client.delivery import Confirmation, Deliveries
from mds_sink.client.records import Publishable


def _checked(max_rows: int, max_ms: float) -> tuple[int, float]:
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if max_ms <= 0:
        raise ValueError(f"max_ms must be above 0, got {max_ms}")
    return max_rows, max_ms / 1000


class BatchPublisher:
    """The blocking batch publisher (`Publisher.batched`); thread-safe. A thread of its own sends a batch
    whose oldest record has waited `max_ms`."""

    def __init__(self, core: PublisherCore, *, max_rows: int, max_ms: float, flush_timeout_s: float) -> None:
        self.core = core
        self.max_rows, self._max_age_s = _checked(max_rows, max_ms)
        self.flush_timeout_s = flush_timeout_s
        self._cond = threading.Condition()  # guards the buffer; sending happens under it, so in order
        self._buffer: dict[str, list[Message]] = {}
        self._rows = 0
        self._oldest = 0.0  # when the oldest buffered record was added (monotonic)
        self._confirmation = Confirmation()
        self._closed = False
        self._error: BaseException | None = None
        self._timer = threading.Thread(target=self._send_aged, name="mds-batch-publisher", daemon=True)
        self._timer.start()

    def add(self, record: Publishable) -> Future[Deliveries]:
        """Check and buffer one record; the future of the batch it is sent in."""
        topic, message = self.core.message(record)
        with self._cond:
            self._raise_if_broken()
            if not self._rows:
                self._oldest = time.monotonic()
                self._cond.notify()  # the timer now has a deadline
            self._buffer.setdefault(topic, []).append(message)
            self._rows += 1
            future = self._confirmation.future
            if self._rows >= self.max_rows:
                self._send()
        return future

    def _raise_if_broken(self) -> None:
        if self._closed:
            raise RuntimeError("the batch publisher is closed")
        if self._error is not None:
            raise self._error

    def _send(self) -> None:
        """Send the buffer (the caller holds the condition)."""
        buffer, confirmation = self._buffer, self._confirmation
        self._buffer, self._rows, self._confirmation = {}, 0, Confirmation()
        try:
            send_blocking(self.core, buffer, confirmation)
        finally:
            confirmation.seal()

    def _send_aged(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._rows:
                    self._cond.wait()
                    continue
                left = self._oldest + self._max_age_s - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                try:
                    self._send()
                except BaseException as exc:  # kept for the collector's next add or flush, not lost here
                    self._error = exc
                    return

    def flush(self, timeout_s: float | None = None) -> None:
        """Send what is buffered and wait for every record sent; NotAcknowledged names each one not taken."""
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._rows:
                self._send()
        self.core.flush(self.flush_timeout_s if timeout_s is None else timeout_s)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify()
            self._timer.join()

    def __enter__(self) -> BatchPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncBatchPublisher:
    """The asyncio batch publisher (`AsyncPublisher.batched`), for one event loop. A task of its own sends
    a batch whose oldest record has waited `max_ms`."""

    def __init__(self, core: PublisherCore, *, max_rows: int, max_ms: float, flush_timeout_s: float) -> None:
        self.core = core
        self.max_rows, self._max_age_s = _checked(max_rows, max_ms)
        self.flush_timeout_s = flush_timeout_s
        self._lock = asyncio.Lock()  # sending happens under it, so in order
        self._buffer: dict[str, list[Message]] = {}
        self._rows = 0
        self._oldest = 0.0
        self._confirmation = Confirmation()
        self._awaitable: asyncio.Future[Deliveries] | None = None
        self._started = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False

    async def add(self, record: Publishable) -> asyncio.Future[Deliveries]:
        """Check and buffer one record; an awaitable of the batch it is sent in."""
        topic, message = self.core.message(record)
        if self._closed:
            raise RuntimeError("the batch publisher is closed")
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._send_aged())
        async with self._lock:
            if not self._rows:
                self._oldest = time.monotonic()
                self._awaitable = asyncio.wrap_future(self._confirmation.future)
                self._started.set()
            self._buffer.setdefault(topic, []).append(message)
            self._rows += 1
            awaitable = self._awaitable
            if self._rows >= self.max_rows:
                await self._send()
        assert awaitable is not None  # set with the batch's first record
        return awaitable

    async def _send(self) -> None:
        """Send the buffer (the caller holds the lock)."""
        buffer, confirmation = self._buffer, self._confirmation
        self._buffer, self._rows, self._confirmation = {}, 0, Confirmation()
        try:
            await send_awaiting(self.core, buffer, confirmation)
        finally:
            confirmation.seal()

    async def _send_aged(self) -> None:
        # Never cancelled: a send cut short would lose what it had not handed over. close() sets
        # _closed and wakes it, and it ends within max_ms.
        while not self._closed:
            if not self._rows:
                self._started.clear()
                await self._started.wait()
                continue
            left = self._oldest + self._max_age_s - time.monotonic()
            if left > 0:
                await asyncio.sleep(left)
                continue
            async with self._lock:
                if self._rows and self._oldest + self._max_age_s <= time.monotonic():
                    await self._send()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Send what is buffered and wait for every record sent; NotAcknowledged names each one not taken."""
        async with self._lock:
            if self._rows:
                await self._send()
        await asyncio.to_thread(self.core.flush, self.flush_timeout_s if timeout_s is None else timeout_s)

    async def close(self) -> None:
        self._closed = True
        self._started.set()
        if self._timer is not None:
            await self._timer
        await self.flush()

    async def __aenter__(self) -> AsyncBatchPublisher:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
