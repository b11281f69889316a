"""Resetting a consumer group: Kafka's committed offsets and the sink's offsets ledger together.

The ledger wins over Kafka when it is ahead (that is how a crash between the two commits is
healed), so resetting only Kafka would be undone at the next assignment. Hence the order: check
everything that can be checked, then delete the ledger rows in an open transaction, move Kafka's
offsets, and commit only if Kafka took every one of them.
"""

from __future__ import annotations

from typing import Any

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from mds_sink.config.settings import Settings
from mds_sink.db.dsn import unreachable
from mds_sink.db.sql import LEDGER_CLEAR
from mds_sink.errors import StartupError
from mds_sink.kafka.clients import admin_config, error_line, watermarks

UNCHANGED = "nothing was changed"
TIMEOUT_S = 30.0


def reset_group(settings: Settings) -> int:
    """Move every partition of the group's topics to its earliest offset and clear the group's ledger rows.

    Returns the partition count. Raises StartupError (one line, saying what was changed) otherwise.
    """
    group = settings.kafka.group_id
    topics = list(settings.topics.table_by_topic())
    # Step 1. Check everything, changing nothing: the setting, the broker, the group, the database.
    url = _owner_url(settings)
    admin, partitions = _kafka_checked(settings, group, topics)
    with _connected(url, settings) as conn:
        kafka_moved = False
        try:
            # Step 2. Delete the ledger rows, uncommitted. Step 3. Move Kafka's offsets (refused: the
            # transaction rolls back). Step 4. Commit, on leaving the block.
            with conn.transaction():
                conn.execute(LEDGER_CLEAR, (group, topics))
                _alter(admin, group, partitions)
                kafka_moved = True
        except psycopg.Error as exc:
            if kafka_moved:  # the commit itself failed: the ledger, still ahead, would undo Kafka's reset
                raise StartupError(
                    f"group {group}: Kafka's offsets were reset but the offsets ledger could not be cleared "
                    f"({error_line(exc)}): run the reset again before starting a sink"
                ) from None
            raise StartupError(
                f"cannot clear the offsets ledger of group {group}: {error_line(exc)}; {UNCHANGED}"
            ) from None
    return len(partitions)


def _owner_url(settings: Settings) -> str:
    return settings.database.require_owner_url(f"to clear the offsets ledger; {UNCHANGED}")


def _kafka_checked(settings: Settings, group: str, topics: list[str]) -> tuple[AdminClient, list[TopicPartition]]:
    """The broker answers and the group is empty; each partition of the topics at its low watermark."""
    # librdkafka would also log every failed connection attempt: the one line raised says it.
    admin = AdminClient({**admin_config(settings), "log_level": 0})
    try:
        admin.list_topics(timeout=TIMEOUT_S / 3)
        _require_empty(admin, group)
        marks = watermarks(settings, topics)
    except KafkaException as exc:
        where = settings.kafka.bootstrap_servers
        raise StartupError(f"cannot reach the broker at {where}: {error_line(exc)}; {UNCHANGED}") from None
    return admin, [TopicPartition(t, p, low) for (t, p), (low, _high) in marks.items()]


def _connected(url: str, settings: Settings) -> psycopg.Connection[tuple[Any, ...]]:
    timeout = max(1, round(settings.database.connect_timeout_s))
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        raise StartupError(f"{unreachable(url, exc) or error_line(exc)}; {UNCHANGED}") from None


def _require_empty(admin: AdminClient, group: str) -> None:
    """Kafka refuses new offsets for a group with members; say so before changing anything."""
    described = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(timeout=TIMEOUT_S)
    members = len(described.members)
    if members:
        raise StartupError(
            f"group {group} has {members} active member{'s' if members > 1 else ''}: "
            f"stop every sink of the group first; {UNCHANGED}"
        )


def _alter(admin: AdminClient, group: str, partitions: list[TopicPartition]) -> None:
    """Kafka's committed offsets, every one or an error: refusals come back per partition, not raised."""
    if not partitions:
        return
    try:
        future = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])[group]
        done = future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        refused, reason = len(partitions), error_line(exc)
    else:
        errors = [tp.error.str() for tp in done.topic_partitions if tp.error is not None]
        if not errors:
            return
        refused, reason = len(errors), str(errors[0])
    if refused == len(partitions):
        raise StartupError(f"cannot reset group {group}: Kafka refused the offsets ({reason}); {UNCHANGED}")
    # Some moved: the ledger stays (the transaction rolls back) and, ahead of them, wins at the next assignment.
    raise StartupError(
        f"cannot reset group {group}: Kafka took {len(partitions) - refused} of {len(partitions)} offsets and "
        f"refused the rest ({reason}); the offsets ledger was left as it was: run the reset again"
    )
