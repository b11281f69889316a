"""What the broker reported for published records: one record's `Delivery`, or one confirmation for many.

Delivery reports are served by the publisher's delivery thread, and by whichever thread calls `flush()`,
so two threads may run the callbacks below at once. The per-record work is kept to operations that
are atomic in CPython (a `next()` of an `itertools.count`, a list append); the rest (completing a
future) happens once per batch, under a lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from mds_sink.client.errors import NotAcknowledged, PermanentPublishError, PublishError, RetryablePublishError

# Errors after which the same record may well be taken: the broker or the network, not the record.
_RETRYABLE = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._QUEUE_FULL,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)

Label = Callable[[str, bytes, bytes], str]  # (topic, key, value) -> the record's name, for an error


def delivery_error(label: str, err: KafkaError) -> PublishError:
    if err.code() in _RETRYABLE or (err.retriable() and not err.fatal()):
        return RetryablePublishError(label, f"not acknowledged: {err.str()}")
    return PermanentPublishError(label, f"refused by the broker: {err.str()}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored a record (acknowledged by every in-sync replica)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Deliveries:
    """Every record of one `publish_many` call (or one batch) acknowledged by every in-sync replica."""

    records: int


class Confirmation:
    """One future for many records: the result once every record sent under it is acknowledged, or
    NotAcknowledged naming each record that was not. Parts are the producer batches it was sent in;
    `seal()` says no more will be added."""

    def __init__(self) -> None:
        self.future: Future[Deliveries] = Future()
        self._lock = threading.Lock()
        self._open = 1  # the sender's own part, closed by seal()
        self._records = 0
        self._failures: list[PublishError] = []

    def add(self, records: int) -> None:
        with self._lock:
            self._open += 1
            self._records += records

    def part_done(self, failures: list[PublishError]) -> None:
        with self._lock:
            self._failures += failures
            self._open -= 1
            if self._open:
                return
        try:
            if self._failures:
                self.future.set_exception(NotAcknowledged(self._failures, self._records))
            else:
                self.future.set_result(Deliveries(self._records))
        except InvalidStateError:  # the caller cancelled it: stopped listening (flush still reports)
            pass

    def seal(self) -> None:
        self.part_done([])


class SentBatch:
    """The records of one `produce_batch` call until the broker has reported on each of them."""

    __slots__ = ("_count", "acked", "confirmation", "failures", "label", "messages", "on_done", "topic")

    def __init__(
        self,
        topic: str,
        messages: list[dict[str, Any]],
        confirmation: Confirmation,
        label: Label,
        on_done: Callable[[SentBatch], None],
    ) -> None:
        self.topic = topic
        self.messages = messages  # kept to name the records not acknowledged when a flush times out
        self.confirmation = confirmation
        self.label = label
        self.on_done = on_done
        self.acked: list[Any] = []
        self.failures: list[PublishError] = []
        self._count = itertools.count(1)

    def delivered(self, err: KafkaError | None, msg: Any) -> None:
        """The delivery report of one record (any thread)."""
        if err is None:
            self.acked.append(msg)
        else:
            self.failures.append(delivery_error(self.label(self.topic, msg.key(), msg.value()), err))
        if next(self._count) == len(self.messages):
            self.on_done(self)

    def refused(self, err: KafkaError, message: dict[str, Any]) -> None:
        """A record the producer did not take: reported as the broker's refusals are."""
        self.failures.append(delivery_error(self.label(self.topic, message["key"], message["value"]), err))
        if next(self._count) == len(self.messages):
            self.on_done(self)

    def unreported(self) -> list[dict[str, Any]]:
        """The records neither acknowledged nor failed yet (for a flush that timed out)."""
        seen: dict[tuple[bytes, bytes], int] = {}
        for msg in list(self.acked):
            k = (msg.key(), msg.value())
            seen[k] = seen.get(k, 0) + 1
        failed = {f.record for f in self.failures}
        left = []
        for m in self.messages:
            k = (m["key"], m["value"])
            if seen.get(k):
                seen[k] -= 1
            elif self.label(self.topic, m["key"], m["value"]) not in failed:
                left.append(m)
        return left
