"""Publishing typed records onto the sink's topics, refused before sending when the sink would refuse them.

One core for `Publisher` (blocking) and `AsyncPublisher` (asyncio): the sink's encoder and key
(produce.py), the sink's validators and rules (core/catalog.py, settings.validation), its topics
(topics.<type>, or one per tenant with topics.tenant_topics), and an idempotent producer with acks=all
(kafka/clients.py). A background thread serves delivery reports, so each call's future completes
without the caller polling.

A collector does not know which tenants are active: the tenant id is checked to be a UUID here, its
existence and state by the sink (a record of an unknown or disabled tenant is dead-lettered there).
Everything else the sink checks is checked here, with the same code and settings.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from mds_sink.client.encoder import RecordEncoder, encoder_for
from mds_sink.client.errors import (
    NotAcknowledged,
    PermanentPublishError,
    PublishError,
    RecordInvalid,
    RetryablePublishError,
)
from mds_sink.client.records import JobRequest, Publishable
from mds_sink.config.settings import Settings
from mds_sink.core.catalog import CATALOG, DataType
from mds_sink.core.rejection import RecordRejected, field_error
from mds_sink.core.tenancy import TenantTopics, tenant_topics
from mds_sink.core.validate import TenantSet
from mds_sink.kafka.clients import producer_config

_MAX_TENANTS = 100_000

# Errors after which the same record may well be taken: the broker or the network, not the record.
_RETRYABLE = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)


class CollectorTenants(TenantSet):
    """The sink's tenant check for a process that cannot see the tenants table: a well-formed id passes
    (canonicalised as the sink does), whether it is known and active is left to the sink."""

    def check(self, raw: Any) -> str:
        try:
            return super().check(raw)
        except RecordRejected as exc:
            if exc.rejection.code != "unknown_tenant":
                raise
        canonical = str(uuid.UUID(str(raw)))  # the check above found it a UUID
        if len(self.active) < _MAX_TENANTS:
            self.active[canonical] = True
        return canonical


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored a record (acknowledged by every in-sync replica)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes
    label: str


def _label(data_type: DataType, record: Mapping[str, Any]) -> str:
    """`bar <tenant>|<vendor>|<symbol> ts=<us>`: what an error names."""
    key = "|".join(str(record.get(k, "")) for k in data_type.key_fields)
    when = next((f" {f}={record[f]}" for f in ("ts", "as_of", "published_at", "requested_at") if f in record), "")
    return f"{data_type.spec.record} {key}{when}"


def _delivery_error(label: str, err: KafkaError) -> PublishError:
    if err.code() in _RETRYABLE or (err.retriable() and not err.fatal()):
        return RetryablePublishError(label, f"not acknowledged: {err.str()}")
    return PermanentPublishError(label, f"refused by the broker: {err.str()}")


class PublisherCore:
    """Prepare (encode, validate, route) and send; shared by both publishers. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        *,
        schemas_dir: Path | None = None,
        queue_records: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.schemas_dir = schemas_dir or settings.schemas
        self.clock = clock
        self.rules = settings.validation.rules(CollectorTenants(), now_us=int(clock() * 1e6))
        self.topics: TenantTopics | None = tenant_topics(
            settings.topics.table_by_topic(), settings.topics.tenant_topics
        )
        self.producer = Producer({**producer_config(settings), "queue.buffering.max.messages": queue_records})
        self._encoders: dict[str, RecordEncoder] = {}  # by topic: with a registry, each topic has its id
        self._converters: dict[str, RecordEncoder] = {}
        self._lock = threading.Lock()
        self._pending: dict[Future[Delivery], str] = {}  # sent, not yet reported: the record's name
        self._failures: list[PublishError] = []
        self._sent = 0
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve, name="mds-publisher-deliveries", daemon=True)
        self._poller.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            self.producer.poll(0.1)

    def _encoder(self, data_type: DataType, topic: str) -> RecordEncoder:
        encoder = self._encoders.get(topic)
        if encoder is None:
            schema_id = None
            if self.settings.kafka.schema_registry_url:
                from mds_sink.avro.registry import register_value_schema  # noqa: PLC0415  (only with a registry)

                path = self.schemas_dir / f"{data_type.spec.record}.avsc"
                schema_id = register_value_schema(self.settings.kafka.schema_registry_url, topic, path)
            encoder = self._encoders[topic] = encoder_for(data_type.spec, self.schemas_dir, schema_id)
        return encoder

    def _converter(self, data_type: DataType) -> RecordEncoder:
        """Converts and fills defaults; its schema id is never sent (framing is per topic, above)."""
        converter = self._converters.get(data_type.name)
        if converter is None:
            converter = self._converters[data_type.name] = encoder_for(data_type.spec, self.schemas_dir)
        return converter

    def prepare(self, record: Publishable) -> Outgoing:
        """The record framed, keyed and routed; RecordInvalid (naming the field) if the sink would refuse it."""
        data_type = CATALOG.get(record.table)
        if data_type is None:
            raise ValueError(f"unknown table {record.table!r}: expected one of {', '.join(CATALOG)}")
        base: str = getattr(self.settings.topics, data_type.name)
        fields = record.fields()
        if not base:
            raise PermanentPublishError(_label(data_type, fields), f"topics.{data_type.name} is not set")
        converter = self._converter(data_type)
        try:
            prepared = converter.record(fields)
        except ValueError as exc:
            raise PermanentPublishError(_label(data_type, fields), str(exc)) from None
        label = _label(data_type, prepared)
        self.rules.now_us = int(self.clock() * 1e6)
        try:
            data_type.validate(converter.with_defaults(prepared), self.rules)
        except RecordRejected as exc:
            raise RecordInvalid(label, exc.rejection) from None
        except (KeyError, TypeError, ValueError) as exc:  # a field missing or of the wrong type: as the sink says
            raise RecordInvalid(label, field_error(exc)) from None
        topic = base
        if self.topics is not None:
            topic = self.topics.topic(base, self.rules.tenants.check(prepared["tenant_id"]))
        encoder = self._encoder(data_type, topic)
        try:
            value = encoder.frame(prepared)
        except ValueError as exc:
            raise PermanentPublishError(label, str(exc)) from None
        return Outgoing(topic, encoder.key(prepared), value, label)

    def try_send(self, out: Outgoing, future: Future[Delivery]) -> bool:
        """Hand the record to the producer; False when its local queue is full (nothing was sent)."""
        # Dict stores and pops are atomic: the delivery thread and publishing threads share _pending
        # without a lock, which the hot path would pay for twice per record.
        self._pending[future] = out.label
        try:
            self.producer.produce(out.topic, value=out.value, key=out.key, on_delivery=partial(self._delivered, future))
        except BufferError:
            del self._pending[future]
            return False
        except KafkaException as exc:  # the producer refused it outright (a fatal producer error, say)
            del self._pending[future]
            raise _delivery_error(out.label, exc.args[0]) from None
        with self._lock:
            self._sent += 1
        return True

    def _delivered(self, future: Future[Delivery], err: KafkaError | None, msg: Any) -> None:
        label = self._pending.pop(future)
        if err is None:
            if not future.cancelled():  # a caller that cancelled its future has stopped listening
                future.set_result(Delivery(msg.topic(), msg.partition(), msg.offset()))
            return
        error = _delivery_error(label, err)
        with self._lock:  # flush swaps the list under this lock: no failure is lost between
            self._failures.append(error)
        if not future.cancelled():
            future.set_exception(error)

    def wait_for_room(self) -> None:
        self.producer.poll(0.05)  # serves delivery reports, which is what frees the queue

    def flush(self, timeout_s: float) -> None:
        """Wait until every record sent is acknowledged or failed; NotAcknowledged if any was not."""
        self.producer.flush(timeout_s)
        with self._lock:
            late = [
                RetryablePublishError(label, f"not acknowledged within {timeout_s:g}s")
                for label in list(self._pending.values())
            ]
            failures, total = self._failures + late, self._sent
            self._failures, self._sent = [], len(self._pending)
        if failures:
            raise NotAcknowledged(failures, total)

    def close(self, timeout_s: float) -> None:
        try:
            self.flush(timeout_s)
        finally:
            self._closed.set()
            self._poller.join()


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
        out = self.core.prepare(record)
        future: Future[Delivery] = Future()
        while not self.core.try_send(out, future):
            self.core.wait_for_room()  # backpressure: block, never drop
        return future

    def publish_many(self, records: Iterable[Publishable]) -> list[Future[Delivery]]:
        """Every record, in order; the first invalid one raises (the ones before it are sent)."""
        return [self.publish(r) for r in records]

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
        out = self.core.prepare(record)
        future: Future[Delivery] = Future()
        while not self.core.try_send(out, future):
            # The delivery thread frees the queue; yield to the loop meanwhile (never drop the record).
            await asyncio.sleep(0.005)
        return asyncio.wrap_future(future)

    async def publish_many(self, records: Iterable[Publishable]) -> list[asyncio.Future[Delivery]]:
        return [await self.publish(r) for r in records]

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
