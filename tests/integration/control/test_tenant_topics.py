"""Producers bound to tenants, with Kafka's own authorization on the local broker's SASL listener.

Each tenant's producer is a SCRAM user allowed to write only its prefix `<run>.<tenant>.` (a PREFIXED
ACL); the sink, a SCRAM user of its own, reads every tenant's topic by pattern. A producer
authenticated as A is refused on B's topics by the broker; a record A writes naming B in its value is
dead-lettered (`tenant_mismatch`) with its exact headers; only A's own rows land. In the shared-topic
mode, a key naming another tenant than the value is dead-lettered the same way.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in the stubs
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from mds_sink.config.settings import Settings, load_settings
from mds_sink.core.tenancy import TenantTopics
from mds_sink.kafka.clients import admin_config
from tests.support import bar, drained, make_scenario, running_sink, unique, wait_until

SASL = "MDS_STACK_KAFKA_SASL_BOOTSTRAP"


def sasl(user: str, password: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": user,
        "sasl.password": password,
    }


@dataclass
class Principal:
    user: str
    password: str

    @property
    def name(self) -> str:
        return f"User:{self.user}"


class Broker:
    """Users and ACLs made through the plaintext listener (a super user on the local stack), removed after."""

    def __init__(self, settings: Settings) -> None:
        self.admin = AdminClient(admin_config(settings))
        self.users: list[str] = []
        self.acls: list[AclBinding] = []

    def user(self, prefix: str) -> Principal:
        who = Principal(unique(prefix), secrets.token_urlsafe(16))
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
        upsert = UserScramCredentialUpsertion(who.user, info, who.password.encode())
        for future in self.admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=30)
        self.users.append(who.user)
        return who

    def allow(
        self, who: Principal, kind: ResourceType, name: str, pattern: ResourcePatternType, *ops: AclOperation
    ) -> None:
        bindings = [AclBinding(kind, name, pattern, who.name, "*", op, AclPermissionType.ALLOW) for op in ops]
        for future in self.admin.create_acls(bindings).values():
            future.result(timeout=30)
        self.acls.extend(bindings)

    def close(self) -> None:
        filters = [
            AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
            )
            for b in self.acls
        ]
        if filters:
            for future in self.admin.delete_acls(filters).values():
                future.result(timeout=30)
        if self.users:
            deletions: list[UserScramCredentialAlteration] = [
                UserScramCredentialDeletion(u, ScramMechanism.SCRAM_SHA_256) for u in self.users
            ]
            for future in self.admin.alter_user_scram_credentials(deletions).values():
                future.result(timeout=30)


@pytest.fixture
def broker() -> Iterator[Broker]:
    if not os.environ.get(SASL):
        pytest.fail(f"{SASL} is not set: deploy/local/stack.sh up exports it (the broker's SASL listener)")
    host, _, port = os.environ[SASL].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        pytest.fail(
            f"no SASL listener at {os.environ[SASL]} ({exc}): a broker started before deploy/local/stack.sh had "
            "one keeps running without it; run deploy/local/stack.sh restart-kafka"
        )
    b = Broker(load_settings())
    try:
        yield b
    finally:
        b.close()


def produce_as(who: Principal, topic: str, items: list[tuple[bytes, bytes]]) -> list[KafkaError | None]:
    """Produce as a SCRAM user on the SASL listener; the delivery result of each record."""
    producer = Producer(
        {"bootstrap.servers": os.environ[SASL], "acks": "all", "linger.ms": 0, **sasl(who.user, who.password)}
    )
    results: list[KafkaError | None] = []
    for key, value in items:
        producer.produce(topic, key=key, value=value, on_delivery=lambda err, _msg: results.append(err))
    assert producer.flush(30) == 0, "not every record was acknowledged or refused in 30 s"
    return results


def headers_of(msg: Any) -> dict[str, str]:
    return {name: (value or b"").decode() for name, value in msg.headers() or []}


def test_a_tenant_producer_writes_its_own_topics_only_and_the_sink_only_its_tenants_rows(broker: Broker) -> None:
    scenario = make_scenario(partitions=1, tables=["bars"], topics={"tenant_topics": True})
    base = scenario.topic("bars")
    a, b = scenario.add_tenant("acl-a"), scenario.add_tenant("acl-b")
    scoped = TenantTopics((base,))
    topic_a, topic_b, dlq = scoped.topic(base, a), scoped.topic(base, b), f"{base}.dlq"
    for future in broker.admin.create_topics([NewTopic(t, 1, 1) for t in (topic_a, topic_b, dlq)]).values():
        future.result(timeout=30)

    producer_a, producer_b, sink = broker.user("tenant-a"), broker.user("tenant-b"), broker.user("sink")
    for who, tenant in ((producer_a, a), (producer_b, b)):
        prefix = scoped.prefix(base, tenant)
        assert prefix == f"{base.rsplit('.', 1)[0]}.{tenant}."
        broker.allow(
            who, ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, AclOperation.WRITE, AclOperation.DESCRIBE
        )
    run = base.rsplit(".", 1)[0] + "."
    broker.allow(sink, ResourceType.TOPIC, run, ResourcePatternType.PREFIXED, AclOperation.READ, AclOperation.DESCRIBE)
    broker.allow(sink, ResourceType.TOPIC, dlq, ResourcePatternType.LITERAL, AclOperation.WRITE)
    group = scenario.settings.kafka.group_id
    broker.allow(sink, ResourceType.GROUP, group, ResourcePatternType.LITERAL, AclOperation.READ, AclOperation.DESCRIBE)

    encoder = scenario.encoder("bars")
    mine = [bar(a, "ACL", m, close=10.0 + m) for m in range(3)]
    forged = bar(b, "FORGED", 0, close=66.0)  # A claims B in the value of a record on A's topic
    sent = produce_as(producer_a, topic_a, [(encoder.key(r), encoder.encode(r)) for r in [*mine, forged]])
    assert sent == [None] * 4
    # The broker refuses A on B's topic: nothing of it reaches the log.
    refused = produce_as(producer_a, topic_b, [(encoder.key(forged), encoder.encode(forged))])
    assert [e.code() if e else None for e in refused] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert produce_as(producer_b, topic_b, [(encoder.key(r), encoder.encode(r)) for r in [bar(b, "OWN", 0)]]) == [None]

    # The sink, as its own SCRAM user: reads both tenants' topics by pattern, writes the shared dead-letter topic.
    as_sink = {**sasl(sink.user, sink.password)}
    kafka = scenario.settings.kafka.model_copy(
        update={"bootstrap_servers": os.environ[SASL], "consumer_options": as_sink, "producer_options": as_sink}
    )
    settings = scenario.settings.model_copy(update={"kafka": kafka})
    ends = {(topic_a, 0): 4, (topic_b, 0): 1}
    with running_sink(settings) as worker:
        wait_until(lambda: drained(worker, ends), timeout_s=60, what="both tenant topics committed")

    assert scenario.rows(a, "SELECT symbol, close FROM tenant_view.bars ORDER BY ts") == [
        ("ACL", 10.0),
        ("ACL", 11.0),
        ("ACL", 12.0),
    ]
    assert scenario.rows(b, "SELECT symbol FROM tenant_view.bars ORDER BY symbol") == [("OWN",)]
    (dead,) = scenario.dead_letters_of(dlq, expect=1)
    h = headers_of(dead)
    assert (dead.key(), dead.value()) == (encoder.key(forged), encoder.encode(forged))
    assert {k: h[k] for k in ("mds.dlq.reason", "mds.dlq.stage", "mds.dlq.field", "mds.dlq.message")} == {
        "mds.dlq.reason": "tenant_mismatch",
        "mds.dlq.stage": "validate",
        "mds.dlq.field": "tenant_id",
        "mds.dlq.message": f"the record is of tenant {b} but its topic names tenant {a}",
    }
    assert (h["mds.dlq.source.topic"], h["mds.dlq.source.partition"], h["mds.dlq.source.offset"]) == (topic_a, "0", "3")
    assert (h["mds.dlq.error.class"], h["mds.dlq.replay.count"], h["mds.dlq.group"]) == ("poison", "0", group)


def test_in_the_shared_topic_a_key_or_header_naming_another_tenant_is_dead_lettered() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    a, b = scenario.add_tenant("key-a"), scenario.add_tenant("key-b")
    encoder = scenario.encoder("bars")
    good, wrong_key, free_key, wrong_header = (bar(a, s, 0) for s in ("GOOD", "WKEY", "FREE", "WHDR"))
    items: list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]] | None]] = [
        (encoder.key(good), encoder.encode(good), None),
        (encoder.key(bar(b, "WKEY", 0)), encoder.encode(wrong_key), None),  # B's key, A's value
        (b"free-form key", encoder.encode(free_key), None),  # names no tenant: not checked
        (encoder.key(wrong_header), encoder.encode(wrong_header), [("mds.tenant_id", b.upper().encode())]),
    ]
    producer = Producer({"bootstrap.servers": scenario.settings.kafka.bootstrap_servers})
    for key, value, headers in items:
        producer.produce(scenario.topic("bars"), key=key, value=value, headers=headers)
    assert producer.flush(30) == 0
    ends = scenario.end_offsets()
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="every offset committed")
    assert scenario.rows(a, "SELECT symbol FROM tenant_view.bars ORDER BY symbol") == [("FREE",), ("GOOD",)]
    assert scenario.rows(b, "SELECT count(*) FROM tenant_view.bars") == [(0,)]
    dead = sorted(scenario.dead_letters("bars", expect=2), key=lambda m: int(headers_of(m)["mds.dlq.source.offset"]))
    assert [
        (headers_of(m)["mds.dlq.source.offset"], headers_of(m)["mds.dlq.reason"], headers_of(m)["mds.dlq.message"])
        for m in dead
    ] == [
        ("1", "tenant_mismatch", f"the record is of tenant {a} but its key names tenant {b}"),
        ("3", "tenant_mismatch", f"the record is of tenant {a} but its header names tenant {b}"),
    ]
    assert headers_of(dead[1])["mds.tenant_id"] == b.upper()  # the original headers are kept


def test_a_tenant_topic_whose_name_holds_no_tenant_id_is_dead_lettered_whole() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"], topics={"tenant_topics": True})
    base = scenario.topic("bars")
    a = scenario.add_tenant("noid")
    admin = AdminClient(admin_config(scenario.settings))
    odd = f"{base.rsplit('.', 1)[0]}.{uuid.uuid4().hex[:8]}-beef.bars"  # matches the pattern, is no UUID
    proper = TenantTopics((base,)).topic(base, a)
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in (odd, proper)]).values():
        future.result(timeout=30)
    encoder = scenario.encoder("bars")
    record = bar(a, "ODD", 0)
    producer = Producer({"bootstrap.servers": scenario.settings.kafka.bootstrap_servers})
    producer.produce(odd, key=encoder.key(record), value=encoder.encode(record))
    producer.produce(proper, key=encoder.key(record), value=encoder.encode(record))
    assert producer.flush(30) == 0
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, {(odd, 0): 1, (proper, 0): 1}), what="both topics committed")
    assert scenario.rows(a, "SELECT symbol FROM tenant_view.bars") == [("ODD",)]
    (dead,) = scenario.dead_letters_of(f"{base}.dlq", expect=1)
    assert headers_of(dead)["mds.dlq.source.topic"] == odd
    assert headers_of(dead)["mds.dlq.message"] == f"the record is of tenant {a} but its topic names tenant (none)"
