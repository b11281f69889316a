"""The publishers' shared core: prepare a record (convert, validate, route, frame, key) and hand it over.

For every record, in this order: converted as `mds-sink produce` converts it (encoder.py), validated by
the sink's validator of its type under the sink's validation settings (core/catalog.py), routed to
`topics.<type>` or its tenant's topic, framed in the sink's wire format and keyed as the catalog says.

Each record first takes the fast path (code generated per type by compiled.py, then the sink's
validator): it either gives exactly the bytes of the general path or raises, and on any exception the
general path runs again from the record, so a refusal always has the general path's reason.

A collector does not know which tenants are active: the tenant id is checked to be a UUID here, its
existence and state by the sink (a record of an unknown or disabled tenant is dead-lettered there).
Everything else the sink checks is checked here, with the same code and settings.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import KafkaError, KafkaException, Producer

from mds_sink.avro.codec import HEADER, MAGIC, strip_logical_types
from mds_sink.client.compiled import AvroWriter, RecordReader, compile_record_reader, compile_writer
from mds_sink.client.delivery import Confirmation, Delivery, SentBatch, delivery_error
from mds_sink.client.encoder import RecordEncoder, encoder_for
from mds_sink.client.errors import (
    NotAcknowledged,
    PermanentPublishError,
    PublishError,
    RecordInvalid,
    RetryablePublishError,
)
from mds_sink.client.records import RECORD_TYPES, Publishable
from mds_sink.config.settings import Settings
from mds_sink.core.catalog import CATALOG, DataType
from mds_sink.core.rejection import RecordRejected, field_error
from mds_sink.core.tenancy import TenantTopics, tenant_topics
from mds_sink.core.validate import TenantSet
from mds_sink.kafka.clients import producer_config

log = logging.getLogger(__name__)

_MAX_TENANTS = 100_000
_MAX_KEYS = 100_000
_WHEN = ("ts", "as_of", "published_at", "requested_at")
Message = dict[str, Any]  # {"key": bytes, "value": bytes}, as Producer.produce_batch takes it


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
class Outgoing:
    topic: str
    key: bytes
    value: bytes
    label: str


def _label(data_type: DataType, record: Mapping[str, Any]) -> str:
    """`bar <tenant>|<vendor>|<symbol> ts=<us>`: what an error names."""
    key = "|".join(str(record.get(k, "")) for k in data_type.key_fields)
    when = next((f" {f}={record[f]}" for f in _WHEN if f in record), "")
    return f"{data_type.spec.record} {key}{when}"


class _Kind:
    """One data type's converter, generated code and caches."""

    def __init__(self, data_type: DataType, schemas_dir: Path, typed: type | None) -> None:
        self.data_type = data_type
        self.validate = data_type.validate
        self.converter = encoder_for(data_type.spec, schemas_dir)  # its schema id is never sent (per topic)
        self.parsed: Any = fastavro.parse_schema(strip_logical_types(self.converter.schema))
        self.write: AvroWriter | None = compile_writer(strip_logical_types(self.converter.schema))
        self.read: RecordReader | None = None
        if typed is not None:
            self.read = compile_record_reader(typed, self.converter.schema, json_payload=data_type.name == "jobs")
        self.key_of = operator.itemgetter(*data_type.key_fields)
        self.keys: dict[Any, bytes] = {}


class PublisherCore:
    """Prepare and send; shared by both publishers and their batch publishers. Thread-safe."""

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
        self.queue_records = queue_records
        self.producer = Producer({**producer_config(settings), "queue.buffering.max.messages": queue_records})
        typed = {t.table: t for t in RECORD_TYPES}
        self._kinds = {name: _Kind(dt, self.schemas_dir, typed.get(name)) for name, dt in CATALOG.items()}
        self._by_class = {t: self._kinds[t.table] for t in RECORD_TYPES}
        self._headers: dict[str, bytes] = {}  # by topic: with a registry, each topic has its id
        self._kind_of_topic: dict[str, _Kind] = {}
        self._encoders: dict[str, RecordEncoder] = {}
        self._send_lock = threading.Lock()  # one sender at a time: a batch's records stay in order
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._flushing = False
        self._pending: dict[Future[Delivery], tuple[str, bytes, bytes]] = {}  # sent alone, not yet reported
        self._batches: set[SentBatch] = set()  # sent in batches, not yet reported on in full
        self._failures: list[PublishError] = []
        self._sent = 0
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve, name="mds-publisher-deliveries", daemon=True)
        self._poller.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                self.producer.poll(0.1)
            except Exception:  # a delivery callback's bug must not stop every later report
                log.exception("serving delivery reports")

    # -- preparing ------------------------------------------------------------------------------------

    def _encoder(self, data_type: DataType, topic: str) -> RecordEncoder:
        encoder = self._encoders.get(topic)
        if encoder is None:
            schema_id = None
            if self.settings.kafka.schema_registry_url:
                from mds_sink.avro.registry import register_value_schema  # noqa: PLC0415  (only with a registry)

                path = self.schemas_dir / f"{data_type.spec.record}.avsc"
                schema_id = register_value_schema(self.settings.kafka.schema_registry_url, topic, path)
            encoder = self._encoders[topic] = encoder_for(data_type.spec, self.schemas_dir, schema_id)
            self._kind_of_topic[topic] = self._kinds[data_type.name]
            self._headers[topic] = HEADER.pack(MAGIC, encoder.schema_id)
        return encoder

    def _topic(self, kind: _Kind, tenant_id: Any) -> str:
        base: str = getattr(self.settings.topics, kind.data_type.name)
        if not base:
            raise ValueError(f"topics.{kind.data_type.name} is not set")
        if self.topics is not None:
            return self.topics.topic(base, self.rules.tenants.check(tenant_id))
        return base

    def message(self, record: Publishable) -> tuple[str, Message]:
        """(topic, {"key", "value"}) of a record; RecordInvalid (naming the field) if the sink would refuse it."""
        try:
            return self._fast(record)
        except Exception:  # the general path below decides, and says why
            out = self._general(record)
            return out.topic, {"key": out.key, "value": out.value}

    def _fast(self, record: Publishable) -> tuple[str, Message]:
        kind = self._by_class.get(type(record))  # type: ignore[arg-type]  # Fields is not a key: looked up below
        if kind is not None and kind.read is not None:
            r = kind.read(record)
        else:
            kind = self._kinds[record.table]
            r = kind.converter.with_defaults(kind.converter.record(record.fields()))
        write = kind.write
        if write is None:
            raise NotImplementedError("no generated writer for this schema")
        self.rules.now_us = int(self.clock() * 1e6)
        kind.validate(r, self.rules)
        topic = self._topic(kind, r["tenant_id"])
        header = self._headers.get(topic)
        if header is None:
            self._encoder(kind.data_type, topic)
            header = self._headers[topic]
        value = write(r, header)
        parts = kind.key_of(r)
        key = kind.keys.get(parts)
        if key is None:
            key = "|".join(map(str, parts) if isinstance(parts, tuple) else (str(parts),)).encode()
            if len(kind.keys) < _MAX_KEYS:
                kind.keys[parts] = key
        return topic, {"key": key, "value": value}

    def prepare(self, record: Publishable) -> Outgoing:
        """The record framed, keyed and routed, and its name; RecordInvalid if the sink would refuse it."""
        topic, message = self.message(record)
        return Outgoing(topic, message["key"], message["value"], self.label(topic, message["key"], message["value"]))

    def _general(self, record: Publishable) -> Outgoing:
        data_type = CATALOG.get(record.table)
        if data_type is None:
            raise ValueError(f"unknown table {record.table!r}: expected one of {', '.join(CATALOG)}")
        base: str = getattr(self.settings.topics, data_type.name)
        fields = record.fields()
        if not base:
            raise PermanentPublishError(_label(data_type, fields), f"topics.{data_type.name} is not set")
        converter = self._kinds[data_type.name].converter
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

    def label(self, topic: str, key: bytes, value: bytes) -> str:
        """The name of a record sent to `topic` (what `_label` gives for the record it was framed from)."""
        kind = self._kind_of_topic[topic]
        when = ""
        try:
            body = BytesIO(value)
            body.seek(HEADER.size)
            record: Any = fastavro.schemaless_reader(body, kind.parsed, None)
            when = next((f" {f}={record[f]}" for f in _WHEN if f in record), "")
        except Exception:  # a value that does not decode: the key alone still names it
            pass
        return f"{kind.data_type.spec.record} {key.decode(errors='replace')}{when}"

    # -- sending one record ---------------------------------------------------------------------------

    def try_send(self, topic: str, message: Message, future: Future[Delivery]) -> bool:
        """Hand one record to the producer; False when its local queue is full (nothing was sent)."""
        key, value = message["key"], message["value"]
        # Dict stores and pops are atomic: the delivery thread and publishing threads share _pending
        # without a lock, which the hot path would pay for twice per record.
        self._pending[future] = (topic, key, value)
        try:
            with self._send_lock:
                self.producer.produce(topic, value=value, key=key, on_delivery=partial(self._delivered, future))
        except BufferError:
            del self._pending[future]
            return False
        except KafkaException as exc:  # the producer refused it outright (a fatal producer error, say)
            del self._pending[future]
            raise delivery_error(self.label(topic, key, value), exc.args[0]) from None
        with self._lock:
            self._sent += 1
        return True

    def _delivered(self, future: Future[Delivery], err: KafkaError | None, msg: Any) -> None:
        topic, key, value = self._pending.pop(future)
        try:
            if err is None:
                future.set_result(Delivery(msg.topic(), msg.partition(), msg.offset()))
            else:
                error = delivery_error(self.label(topic, key, value), err)
                with self._lock:  # flush swaps the list under this lock: no failure is lost between
                    self._failures.append(error)
                future.set_exception(error)
        except InvalidStateError:  # a caller that cancelled its future has stopped listening
            pass
        self._wake_flush()

    # -- sending many -----------------------------------------------------------------------------------

    def batch(self, topic: str, messages: list[Message], confirmation: Confirmation) -> SentBatch:
        """A batch of one topic's records under `confirmation`, to be sent with `try_send_batch`."""
        confirmation.add(len(messages))
        batch = SentBatch(topic, messages, confirmation, self.label, self._batch_done)
        self._batches.add(batch)
        return batch

    def try_send_batch(self, batch: SentBatch, start: int) -> int:
        """Hand `batch.messages[start:]` to the producer, as many as its local queue has room for, in order;
        the index of the first record not sent (len(messages) once all are)."""
        messages = batch.messages
        with self._send_lock:
            # outq counts the records queued, in flight and reported but not yet served: at least what
            # the queue's limit counts, so a batch cut to this room is never refused for a full queue.
            room = self.queue_records - len(self.producer)
            if room <= 0:
                return start
            end = min(len(messages), start + room)
            part = messages if start == 0 and end == len(messages) else messages[start:end]
            try:
                queued = self.producer.produce_batch(batch.topic, part, on_delivery=batch.delivered)
            except KafkaException as exc:  # refused outright (a fatal producer error): each record says so
                for m in part:
                    batch.refused(exc.args[0], m)
                return end
        if queued < len(part):
            failed = [i for i, m in enumerate(part) if "_error" in m]
            full = all(part[i]["_error"].code() == KafkaError._QUEUE_FULL for i in failed)
            if full and failed == list(range(failed[0], len(part))):
                for m in part[failed[0] :]:
                    del m["_error"]  # sent again once there is room: order kept
                end = start + failed[0]
            else:
                for i in failed:
                    batch.refused(part[i].pop("_error"), part[i])
        with self._lock:
            self._sent += end - start
        return end

    def _batch_done(self, batch: SentBatch) -> None:
        self._batches.discard(batch)
        if batch.failures:
            with self._lock:
                self._failures += batch.failures
        batch.confirmation.part_done(batch.failures)
        self._wake_flush()

    def wait_for_room(self) -> None:
        self.producer.poll(0.05)  # serves delivery reports, which is what frees the queue

    # -- flushing -----------------------------------------------------------------------------------------

    def _wake_flush(self) -> None:
        if self._flushing:
            with self._idle:
                self._idle.notify_all()

    def flush(self, timeout_s: float) -> None:
        """Wait until every record sent is acknowledged or failed; NotAcknowledged if any was not."""
        deadline = time.monotonic() + timeout_s
        self.producer.flush(timeout_s)
        # The delivery thread may still be running the last reports it took: wait for them too.
        self._flushing = True
        try:
            with self._idle:
                self._idle.wait_for(
                    lambda: not self._pending and not self._batches, timeout=max(0.0, deadline - time.monotonic())
                )
        finally:
            self._flushing = False
        reason = f"not acknowledged within {timeout_s:g}s"
        with self._lock:
            late = [RetryablePublishError(self.label(*sent), reason) for sent in list(self._pending.values())]
            late += [
                RetryablePublishError(self.label(b.topic, m["key"], m["value"]), reason)
                for b in list(self._batches)
                for m in b.unreported()
            ]
            failures, total = self._failures + late, self._sent
            self._failures, self._sent = [], len(late)
        if failures:
            raise NotAcknowledged(failures, total)

    def close(self, timeout_s: float) -> None:
        try:
            self.flush(timeout_s)
        finally:
            self._closed.set()
            self._poller.join()


def send_blocking(core: PublisherCore, by_topic: dict[str, list[Message]], confirmation: Confirmation) -> None:
    """Every record to the producer, in order per topic, blocking while its queue is full (never dropping)."""
    for topic, messages in by_topic.items():
        batch = core.batch(topic, messages, confirmation)
        sent = core.try_send_batch(batch, 0)
        while sent < len(messages):
            core.wait_for_room()
            sent = core.try_send_batch(batch, sent)


async def send_awaiting(core: PublisherCore, by_topic: dict[str, list[Message]], confirmation: Confirmation) -> None:
    """send_blocking for the event loop: yields to it while the queue is full."""
    for topic, messages in by_topic.items():
        batch = core.batch(topic, messages, confirmation)
        sent = core.try_send_batch(batch, 0)
        while sent < len(messages):
            # The delivery thread frees the queue; yield to the loop meanwhile (never drop a record).
            await asyncio.sleep(0.005)
            sent = core.try_send_batch(batch, sent)
