"""The consumer as the sink uses it: the few calls of confluent_kafka.Consumer the worker makes.

The worker's units (rebalance, commits, backpressure) talk to this protocol only, so that tests can
hand them an in-memory consumer instead of a broker; `open_group_consumer` gives the real one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Message, TopicPartition
from confluent_kafka.admin import AdminClient

from mds_sink.config.settings import Settings
from mds_sink.kafka.clients import GroupProtocol, align_group_session, consumer_config, group_protocol

# librdkafka passes the consumer itself and the partitions concerned.
RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class Consumer(Protocol):
    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = ...,
        on_revoke: RebalanceCallback | None = ...,
        on_lost: RebalanceCallback | None = ...,
    ) -> None: ...

    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Message]: ...

    def assign(self, partitions: list[TopicPartition]) -> None:
        """An eager rebalance: the whole new assignment."""

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        """A cooperative rebalance: these partitions added to what is kept."""

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]:
        """Synchronous: each partition returned carries its own error, if any."""

    def committed(self, partitions: list[TopicPartition], timeout: float = ...) -> list[TopicPartition]: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]: ...

    def close(self) -> None: ...


def open_consumer(settings: Settings, protocol: GroupProtocol = "classic") -> Consumer:
    return KafkaConsumer(consumer_config(settings, protocol))


def open_group_consumer(settings: Settings, admin: AdminClient) -> tuple[Consumer, GroupProtocol]:
    """The sink's consumer, with the group protocol it joins with (kafka.group_protocol; `auto` asks the
    broker); under the consumer protocol the group gets kafka.session_timeout_ms first."""
    protocol = group_protocol(settings, admin)
    if protocol == "consumer":
        align_group_session(settings, admin)
    return open_consumer(settings, protocol), protocol
