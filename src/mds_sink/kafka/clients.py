"""Kafka at the edge: client configurations, topic checks, and the dead-letter producer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in stubs
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from mds_sink.config.settings import Settings
from mds_sink.core.deadletter import DeadLetterRecord, dead_letter_topic
from mds_sink.errors import BrokerUnavailable, StartupError, first_line

log = logging.getLogger(__name__)

# Dead letters are kept long enough for an operator to notice, fix and replay over a holiday.
DLQ_RETENTION_MS = 14 * 24 * 3600 * 1000


GroupProtocol = Literal["consumer", "classic"]
# librdkafka 2.12 is the first with the consumer group protocol generally available.
_CONSUMER_PROTOCOL_LIBRDKAFKA = 0x020C0000


def consumer_config(settings: Settings, protocol: GroupProtocol = "classic") -> dict[str, Any]:
    k = settings.kafka
    if protocol == "consumer":
        # The broker assigns; session timeout and heartbeat are its group's settings (librdkafka refuses them).
        group: dict[str, Any] = {"group.protocol": "consumer", "group.remote.assignor": k.remote_assignor}
    else:
        group = {"partition.assignment.strategy": k.assignment_strategy, "session.timeout.ms": k.session_timeout_ms}
    return {
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": k.group_id,
        "client.id": k.client_id,
        # Offsets are committed by the sink after the rows are in the database, never by the client.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **group,
        "max.poll.interval.ms": k.max_poll_interval_ms,
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 100,
        # Prefetch bounded to ~4 MB (0.1-0.3 s of records at full speed): the sink waits on the database,
        # not the broker, and 32 MB of prefetch made most of a 300 MB peak RSS while draining a backlog.
        # A partition whose prefetch is full is fetched again after this backoff: librdkafka's default
        # (1 s) starved a small queue (70k instead of 130k records/s consumed, benchmarks/README.md).
        "queued.max.messages.kbytes": 4_096,
        "fetch.queue.backoff.ms": 10,
        "log_level": 4,
        **k.consumer_options,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    return {
        "bootstrap.servers": k.bootstrap_servers,
        "client.id": f"{k.client_id}-producer",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "log_level": 4,
        **k.producer_options,
    }


# The consumer's way of connecting (TLS, SASL) is the admin client's too: it talks to the same listener.
_CONNECTION_OPTIONS = ("security.protocol", "sasl.", "ssl.")


def admin_config(settings: Settings) -> dict[str, Any]:
    connection = {k: v for k, v in settings.kafka.consumer_options.items() if k.startswith(_CONNECTION_OPTIONS)}
    return {"bootstrap.servers": settings.kafka.bootstrap_servers, "log_level": 3, **connection}


def partition_counts(admin: AdminClient, topics: Iterable[str], *, timeout_s: float = 10.0) -> dict[str, int]:
    """Partitions per existing topic; missing topics are absent. Raises BrokerUnavailable."""
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailable(str(exc)) from None
    wanted = set(topics)
    return {name: len(t.partitions) for name, t in metadata.topics.items() if name in wanted and t.error is None}


def ensure_topics(
    admin: AdminClient, topics: dict[str, int], config: dict[str, str], *, timeout_s: float = 15.0
) -> list[str]:
    """Create the topics that do not exist (name -> partitions); returns the names created."""
    existing = partition_counts(admin, topics, timeout_s=timeout_s)
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=-1, config=config)
        for name, n in topics.items()
        if name not in existing
    ]
    if not missing:
        return []
    created: list[str] = []
    for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerUnavailable(f"cannot create topic {name}: {exc}") from None
    return created


def dlq_topic_config() -> dict[str, str]:
    return {"retention.ms": str(DLQ_RETENTION_MS), "cleanup.policy": "delete"}


class DeadLetterProducer:
    """Produces dead letters and returns only once the broker acknowledged every one of them."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._lock = threading.Lock()

    def send(self, records: Sequence[DeadLetterRecord], *, timeout_s: float) -> None:
        if not records:
            return
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        with self._lock:
            for r in records:
                self._produce(r, delivered)
            remaining = self._producer.flush(timeout_s)
        if remaining or failures:
            detail = failures[0] if failures else f"{remaining} not acknowledged within {timeout_s:.0f}s"
            raise BrokerUnavailable(f"dead letters not acknowledged: {detail}")

    def _produce(self, r: DeadLetterRecord, delivered: Any) -> None:
        while True:
            try:
                self._producer.produce(r.topic, value=r.value, key=r.key, headers=r.headers, on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.1)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)


def watermarks(
    settings: Settings, topics: Iterable[str], *, timeout_s: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, high) watermark of every partition of the topics that exist, read by a throwaway consumer."""
    probe = Consumer({**consumer_config(settings), "group.id": f"{settings.kafka.group_id}.watermarks"})
    try:
        metadata = probe.list_topics(timeout=timeout_s)
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for topic in topics:
            t = metadata.topics.get(topic)
            if t is None or t.error is not None:
                continue
            for p in t.partitions:
                low, high = probe.get_watermark_offsets(KafkaTopicPartition(topic, p), timeout=timeout_s)
                out[(topic, p)] = (low, high)
        return out
    finally:
        probe.close()


def prepare_topics(
    admin: AdminClient, settings: Settings, topics: Iterable[str], *, must_exist: bool = True
) -> list[str]:
    """Refuse to start on a consumed topic that does not exist (naming its setting); create the
    dead-letter topics that are missing. Returns the dead-letter topics created. With tenant-scoped
    topics `topics` are the base names, which need not exist (the tenants' topics match a pattern)."""
    servers = settings.kafka.bootstrap_servers
    wanted = list(topics)
    try:
        counts = partition_counts(admin, wanted)
    except BrokerUnavailable as exc:
        raise StartupError(f"cannot reach the broker at {servers}: {exc}") from None
    setting_of = {topic: table for table, topic in settings.topics.model_dump().items()}
    for topic in wanted if must_exist else ():
        if topic not in counts:
            raise StartupError(
                f"topic {topic!r} (setting topics.{setting_of.get(topic, '?')}) does not exist on {servers}"
            )
    dead_letter_topics = {dead_letter_topic(settings.topics.dead_letter, t): 1 for t in wanted}
    return ensure_topics(admin, dead_letter_topics, dlq_topic_config())


def error_line(exc: BaseException) -> str:
    """The first line of an error; of a Kafka error its text alone, not the KafkaError{code=...} dump."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return first_line(exc)


def group_protocol(settings: Settings, admin: AdminClient) -> GroupProtocol:
    """The group protocol to join with: kafka.group_protocol, or for `auto` the consumer protocol where
    the broker lists it in group.coordinator.rebalance.protocols (Kafka 4+; Redpanda and older Kafka do
    not have the setting) and this librdkafka has it."""
    wanted = settings.kafka.group_protocol
    if wanted != "auto":
        return wanted
    if confluent_kafka.libversion()[1] < _CONSUMER_PROTOCOL_LIBRDKAFKA:
        return "classic"
    try:
        brokers = admin.list_topics(timeout=10).brokers
        resource = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
        configs = admin.describe_configs([resource], request_timeout=10)[resource].result(timeout=15)
    except Exception as exc:  # a broker that will not say: the protocol every broker has
        log.info("group protocol: classic (the broker's protocols could not be read: %s)", first_line(exc))
        return "classic"
    entry = configs.get("group.coordinator.rebalance.protocols")
    offered = {p.strip() for p in str(entry.value if entry is not None else "").split(",")}
    return "consumer" if "consumer" in offered else "classic"


# The broker's default heartbeat under the consumer protocol; a session needs about three of them.
_HEARTBEAT_MS = 5_000


def align_group_session(settings: Settings, admin: AdminClient) -> None:
    """Under the consumer protocol the session timeout is the group's, set on the broker: give the group
    kafka.session_timeout_ms (and a heartbeat a third of it, at most the default). Nothing is altered
    where the group already has them, so the default needs no ALTER_CONFIGS right on the group; a broker
    that refuses (below its minimum, or no right) keeps its own, and says so in the log."""
    k = settings.kafka
    wanted = {
        "consumer.session.timeout.ms": str(k.session_timeout_ms),
        "consumer.heartbeat.interval.ms": str(min(_HEARTBEAT_MS, k.session_timeout_ms // 3)),
    }
    try:
        resource = ConfigResource(ConfigResource.Type.GROUP, k.group_id)
        current = admin.describe_configs([resource], request_timeout=10)[resource].result(timeout=15)
        changes = {name: value for name, value in wanted.items() if getattr(current.get(name), "value", None) != value}
        if not changes:
            return
        entries = [
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET) for name, value in changes.items()
        ]
        altered = ConfigResource(ConfigResource.Type.GROUP, k.group_id, incremental_configs=entries)
        admin.incremental_alter_configs([altered], request_timeout=10)[altered].result(timeout=15)
        log.info("group %s: %s", k.group_id, ", ".join(f"{n}={v}" for n, v in sorted(changes.items())))
    except Exception as exc:
        log.warning(
            "kafka.session_timeout_ms: the broker keeps group %s's own session timeout (%s)",
            k.group_id,
            first_line(exc),
        )
