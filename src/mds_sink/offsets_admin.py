"""Resetting a consumer group: Kafka's committed offsets and the sink's offsets ledger together.

The ledger wins over Kafka when it is ahead (that is how a crash between the two commits is
healed), so resetting only Kafka would be undone at the next assignment.
"""

from __future__ import annotations

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from mds_sink.kafka_io import StartupError, admin_config, watermarks
from mds_sink.settings import Settings


def reset_group(settings: Settings) -> int:
    """Move every partition of the group's topics to its earliest offset; returns the partition count."""
    topics = list(settings.topics.table_by_topic())
    group = settings.kafka.group_id
    partitions = [TopicPartition(t, p, low) for (t, p), (low, _high) in watermarks(settings, topics).items()]
    admin = AdminClient(admin_config(settings))
    try:
        future = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])[group]
        future.result(timeout=30)
    except KafkaException as exc:
        raise StartupError(f"cannot reset group {group} (stop every sink of the group first): {exc}") from None
    if settings.database.owner_url is None:
        raise StartupError("setting database.owner_url is required to clear the offsets ledger")
    with psycopg.connect(settings.database.owner_url.get_secret_value(), autocommit=True) as conn:
        conn.execute("DELETE FROM sink_offsets WHERE consumer_group = %s AND topic = ANY(%s)", (group, topics))
    return len(partitions)
