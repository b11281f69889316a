"""`mds-sink offsets reset`: every check before any change, then the ledger and Kafka together or neither."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mds_sink.control.offsets import reset_group
from mds_sink.errors import StartupError
from mds_sink.kafka.clients import admin_config, consumer_config, producer_config
from tests.support import Scenario, bar, drained, make_scenario, running_sink, sink_env, wait_until
from tests.throwaway import with_user

SEEDED = 3  # records per partition


def seeded() -> Scenario:
    """Two bars partitions of three records each, sunk: Kafka and the ledger both at offset 3."""
    scenario = make_scenario(partitions=2, tables=["bars"])
    tenant = scenario.add_tenant("reset")
    encoder = scenario.encoder("bars")
    producer = Producer(producer_config(scenario.settings))
    for partition in (0, 1):
        for minute in range(SEEDED):
            record = bar(tenant, f"R{partition}", minute)
            producer.produce(
                scenario.topic("bars"), key=encoder.key(record), value=encoder.encode(record), partition=partition
            )
    assert producer.flush(30) == 0
    ends = scenario.end_offsets()
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="the seed records committed")
    assert kafka_offsets(scenario) == at(scenario, SEEDED, SEEDED)
    assert ledger(scenario) == at(scenario, SEEDED, SEEDED)
    return scenario


def at(scenario: Scenario, first: int, second: int) -> dict[tuple[str, int], int]:
    return {(scenario.topic("bars"), 0): first, (scenario.topic("bars"), 1): second}


def kafka_offsets(scenario: Scenario) -> dict[tuple[str, int], int]:
    return scenario.committed()


def ledger(scenario: Scenario) -> dict[tuple[str, int], int]:
    rows = scenario.rows(
        None,
        "SELECT topic, partition, next_offset FROM sink_offsets WHERE consumer_group = %s",
        (scenario.settings.kafka.group_id,),
        url=scenario.owner_url,
    )
    return {(topic, partition): offset for topic, partition, offset in rows}


def reset_cli(scenario: Scenario, *, without: str | None = None, **override: str) -> subprocess.CompletedProcess[str]:
    """`mds-sink offsets reset --yes` as an operator runs it, with the scenario's group and topics."""
    env = {**sink_env(scenario.settings), **override}
    if without is not None:
        del env[without]
    return subprocess.run(
        [sys.executable, "-m", "mds_sink", "offsets", "reset", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def member_of(scenario: Scenario) -> Iterator[Consumer]:
    """A consumer of the scenario's group, holding its partitions until the block ends."""
    consumer = Consumer(consumer_config(scenario.settings))
    consumer.subscribe([scenario.topic("bars")])

    def assigned() -> bool:
        consumer.poll(0.1)  # the rebalance happens in poll
        return bool(consumer.assignment())

    try:
        wait_until(assigned, what="the member assigned")
        yield consumer
    finally:
        consumer.close()


def test_without_owner_url_nothing_is_reset() -> None:
    scenario = seeded()
    done = reset_cli(scenario, without="MDS_SINK_DATABASE__OWNER_URL")
    assert kafka_offsets(scenario) == at(scenario, SEEDED, SEEDED)
    assert ledger(scenario) == at(scenario, SEEDED, SEEDED)
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "mds-sink: invalid setting database.owner_url (MDS_SINK_DATABASE__OWNER_URL): required to clear the "
        "offsets ledger; nothing was changed\n",
    )


def test_an_unreachable_database_is_found_before_kafka_is_changed() -> None:
    scenario = seeded()
    owner = urlsplit(scenario.owner_url)
    wrong = with_user(scenario.owner_url, str(owner.username), "not-the-password")
    done = reset_cli(scenario, MDS_SINK_DATABASE__OWNER_URL=wrong)
    assert kafka_offsets(scenario) == at(scenario, SEEDED, SEEDED)
    assert ledger(scenario) == at(scenario, SEEDED, SEEDED)
    host, port, user = owner.hostname, owner.port, owner.username
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"mds-sink: cannot reach the database at {host}:{port}{owner.path} as {user}: connection failed: "
        f'connection to server at "{host}", port {port} failed: FATAL:  password authentication failed for user '
        f'"{user}"; nothing was changed\n',
    )


def test_a_group_with_an_active_member_is_refused_and_nothing_is_reset() -> None:
    scenario = seeded()
    group = scenario.settings.kafka.group_id
    with member_of(scenario):
        done = reset_cli(scenario)
    assert kafka_offsets(scenario) == at(scenario, SEEDED, SEEDED)
    assert ledger(scenario) == at(scenario, SEEDED, SEEDED)
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"mds-sink: group {group} has 1 active member: stop every sink of the group first; nothing was changed\n",
    )


def test_a_reset_moves_kafka_to_the_low_watermark_and_clears_the_ledger() -> None:
    scenario = seeded()
    # Partition 0 starts at offset 1 now, as after retention: "earliest" is the low watermark, not 0.
    admin = AdminClient(admin_config(scenario.settings))
    deleted = admin.delete_records([TopicPartition(scenario.topic("bars"), 0, 1)])
    for future in deleted.values():
        future.result(timeout=30)
    done = reset_cli(scenario)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"group {scenario.settings.kafka.group_id}: 2 partitions reset to earliest; offsets ledger cleared\n",
        "",
    )
    assert kafka_offsets(scenario) == at(scenario, 1, 0)
    assert ledger(scenario) == {}


def test_when_kafka_refuses_the_change_the_ledger_is_rolled_back() -> None:
    """A member joins after the checks: Kafka refuses the new offsets, and the deleted ledger rows return."""
    scenario = seeded()
    failure: list[BaseException] = []

    def reset() -> None:
        try:
            reset_group(scenario.settings)
        except BaseException as exc:  # the assertion below is about this error
            failure.append(exc)

    # Hold one ledger row: the reset passes its checks, then waits on the row in its DELETE.
    with psycopg.connect(scenario.owner_url) as blocker:
        blocker.execute(
            "SELECT 1 FROM sink_offsets WHERE consumer_group = %s FOR UPDATE", (scenario.settings.kafka.group_id,)
        )
        resetting = threading.Thread(target=reset, name="test-reset")
        resetting.start()
        wait_until(lambda: deleting_waits(scenario), what="the reset's DELETE waiting on the held row")
        with member_of(scenario):
            blocker.commit()  # the DELETE goes on; Kafka then refuses: the group has a member
            resetting.join(timeout=60)
    assert not resetting.is_alive()
    assert [(type(e), str(e)) for e in failure] == [
        (
            StartupError,
            f"cannot reset group {scenario.settings.kafka.group_id}: Kafka refused the offsets "
            "(Broker: Unknown member); nothing was changed",
        )
    ]
    assert kafka_offsets(scenario) == at(scenario, SEEDED, SEEDED)
    assert ledger(scenario) == at(scenario, SEEDED, SEEDED)


def deleting_waits(scenario: Scenario) -> bool:
    waiting = scenario.rows(
        None,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND starts_with(query, 'DELETE FROM sink_offsets')",
        url=scenario.owner_url,
    )
    return bool(waiting[0][0])
