"""Publishing typed records onto the sink's topics, refused before sending when the sink would refuse them.

`Publisher` (blocking) and `AsyncPublisher` (asyncio) over one core (core.py): the sink's encoder, key,
validators, rules and topics, and an idempotent producer with acks=all. A background thread serves
delivery reports, so each call's future completes without the caller polling.

`publish(record)` gives one future per record; `publish_many(records)` one future for all of them,
which is what publishing many costs least with: the records go to the producer in batches, and the
delivery reports are counted per batch instead of completing a future per record.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from mds_sink.client.batching import AsyncBatchPublisher, BatchPublisher
from mds_sink.client.core import CollectorTenants, Message, Outgoing, PublisherCore, send_awaiting, send_blocking
from mds_sink.client.delivery import Confirmation, Deliveries, Delivery
from mds_sink.client.records import JobRequest, Publishable
from mds_sink.config.settings import Settings

__all__ = [
    "AsyncPublisher",
    "CollectorTenants",
    "Deliveries",
    "Delivery",
    "Outgoing",
    "Publisher",
    "PublisherCore",
]

_CHUNK = 1_000  # records prepared, then handed to the producer in one call


def _chunks(core: PublisherCore, records: Iterable[Publishable]) -> Iterator[dict[str, list[Message]]]:
    """The records prepared (checked, keyed, encoded), by topic, _CHUNK at a time. A record that fails
    its check raises here after the chunk before it is handed out: those records are sent regardless."""
    by_topic: dict[str, list[Message]] = {}
    prepared = 0
    try:
        for record in records:
            topic, message = core.message(record)
            by_topic.setdefault(topic, []).append(message)
            prepared += 1
            if prepared == _CHUNK:
                yield by_topic
                by_topic, prepared = {}, 0
    except BaseException:
        if by_topic:
            yield by_topic  # sent by the caller; the error is raised when it asks for the next chunk
        raise
    if by_topic:
        yield by_topic


def job(
    *,
    tenant_id: str | uuid.UUID,
    idempotency_key: str,
    job_type: str,
    payload: Mapping[str, Any] | None,
    priority: int,
    requested_by: str | None,
    requested_at: datetime | None,
) -> JobRequest:
    return JobRequest(
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
        job_type=job_type,
        payload=dict(payload or {}),
        priority=priority,
        requested_by=requested_by,
        requested_at=requested_at or datetime.now(UTC),
    )


class Publisher:
    """Blocking publisher: `publish` waits only while the local queue is full, then returns a future of
    the broker's acknowledgement; `flush` waits for all of them and raises if any was not acknowledged.

        with Publisher(load_settings()) as publisher:
            publisher.publish(Bar(tenant_id=..., vendor="polygon", symbol="AAPL", ...))
    """

    def __init__(
        self,
        settings: Settings,
        *,
        schemas_dir: Path | None = None,
        queue_records: int = 100_000,
        flush_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = PublisherCore(settings, schemas_dir=schemas_dir, queue_records=queue_records, clock=clock)
        self.flush_timeout_s = flush_timeout_s

    def publish(self, record: Publishable) -> Future[Delivery]:
        """Validate, encode and send one record; RecordInvalid or PermanentPublishError before sending."""
        topic, message = self.core.message(record)
        future: Future[Delivery] = Future()
        while not self.core.try_send(topic, message, future):
            self.core.wait_for_room()  # backpressure: block, never drop
        return future

    def publish_many(self, records: Iterable[Publishable]) -> Future[Deliveries]:
        """Every record, in order; one future for all of them: `Deliveries` once every one is acknowledged,
        or NotAcknowledged naming each that was not. The first invalid record raises (the ones before
        it are sent, and reported by `flush`)."""
        confirmation = Confirmation()
        try:
            for chunk in _chunks(self.core, records):
                send_blocking(self.core, chunk, confirmation)
        finally:
            confirmation.seal()
        return confirmation.future

    def batched(self, *, max_rows: int = 1_000, max_ms: float = 100.0) -> BatchPublisher:
        """A batch publisher over this publisher: records buffered and sent when `max_rows` are waiting or
        the oldest has waited `max_ms` (batching.py)."""
        return BatchPublisher(self.core, max_rows=max_rows, max_ms=max_ms, flush_timeout_s=self.flush_timeout_s)

    def enqueue_job(
        self,
        *,
        tenant_id: str | uuid.UUID,
        idempotency_key: str,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        priority: int = 0,
        requested_by: str | None = None,
        requested_at: datetime | None = None,
    ) -> Future[Delivery]:
        """A job request onto the jobs topic; the sink stores one job per (tenant, idempotency key)."""
        return self.publish(
            job(
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                job_type=job_type,
                payload=payload,
                priority=priority,
                requested_by=requested_by,
                requested_at=requested_at,
            )
        )

    def flush(self, timeout_s: float | None = None) -> None:
        self.core.flush(self.flush_timeout_s if timeout_s is None else timeout_s)

    def close(self) -> None:
        self.core.close(self.flush_timeout_s)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncPublisher:
    """The asyncio publisher over the same core: `await publish(record)` waits while the local queue is
    full and returns an awaitable of the acknowledgement; `await flush()` raises as Publisher's does."""

    def __init__(
        self,
        settings: Settings,
        *,
        schemas_dir: Path | None = None,
        queue_records: int = 100_000,
        flush_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = PublisherCore(settings, schemas_dir=schemas_dir, queue_records=queue_records, clock=clock)
        self.flush_timeout_s = flush_timeout_s

    async def publish(self, record: Publishable) -> asyncio.Future[Delivery]:
        topic, message = self.core.message(record)
        future: Future[Delivery] = Future()
        while not self.core.try_send(topic, message, future):
            # The delivery thread frees the queue; yield to the loop meanwhile (never drop the record).
            await asyncio.sleep(0.005)
        return asyncio.wrap_future(future)

    async def publish_many(self, records: Iterable[Publishable]) -> asyncio.Future[Deliveries]:
        """As Publisher.publish_many; the loop gets a turn between each batch of records prepared."""
        confirmation = Confirmation()
        try:
            for chunk in _chunks(self.core, records):
                await send_awaiting(self.core, chunk, confirmation)
                await asyncio.sleep(0)
        finally:
            confirmation.seal()
        return asyncio.wrap_future(confirmation.future)

    def batched(self, *, max_rows: int = 1_000, max_ms: float = 100.0) -> AsyncBatchPublisher:
        """As Publisher.batched, for the event loop (`async with`, `await batch.add(record)`)."""
        return AsyncBatchPublisher(self.core, max_rows=max_rows, max_ms=max_ms, flush_timeout_s=self.flush_timeout_s)

    async def enqueue_job(
        self,
        *,
        tenant_id: str | uuid.UUID,
        idempotency_key: str,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        priority: int = 0,
        requested_by: str | None = None,
        requested_at: datetime | None = None,
    ) -> asyncio.Future[Delivery]:
        return await self.publish(
            job(
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                job_type=job_type,
                payload=payload,
                priority=priority,
                requested_by=requested_by,
                requested_at=requested_at,
            )
        )

    async def flush(self, timeout_s: float | None = None) -> None:
        await asyncio.to_thread(self.core.flush, self.flush_timeout_s if timeout_s is None else timeout_s)

    async def close(self) -> None:
        await asyncio.to_thread(self.core.close, self.flush_timeout_s)

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
