"""What a record's topic, key and headers say about its tenant (core/tenancy.py, pure)."""

from __future__ import annotations

import re

from mds_sink.core.tenancy import TenantTopics, check, key_tenant

A = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
B = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


def test_tenant_topics_are_the_base_with_the_tenant_before_the_last_part() -> None:
    topics = TenantTopics(("mds.bars", "run-1.quotes", "plain"))
    assert topics.topic("mds.bars", A) == f"mds.{A}.bars"
    assert topics.prefix("mds.bars", A) == f"mds.{A}."
    assert topics.topic("plain", A) == f"{A}.plain"
    assert topics.route(f"mds.{A}.bars") == ("mds.bars", A)
    assert topics.route(f"mds.{A.upper()}.bars") == ("mds.bars", A)  # ids are compared in canonical form
    assert topics.route(f"run-1.{A}.quotes") == ("run-1.quotes", A)
    assert topics.route("mds.deadbeef.bars") == ("mds.bars", "")  # matches the pattern, names no tenant
    assert topics.route("mds.bars") is None
    assert topics.route(f"mds.x.{A}.bars") is None
    pattern = re.compile(topics.pattern("mds.bars"))
    assert pattern.match(f"mds.{A}.bars")
    assert not pattern.match(f"mds.{A}.bars.dlq")
    assert not pattern.match(f"mdsx{A}.bars")


def test_a_key_names_a_tenant_only_through_an_id_in_its_first_field() -> None:
    assert key_tenant(f"{A}|polygon|AAPL".encode()) == A
    assert key_tenant(A.upper().encode()) == A
    assert key_tenant(b"good-1") is None
    assert key_tenant(None) is None
    assert key_tenant(b"x" * 36 + b"|v") is None
    hex32 = A.replace("-", "")
    # Only a first field of exactly 36 characters counts, whatever uuid.UUID would accept besides.
    for key in (hex32.encode(), f"{hex32}|polygon".encode(), f"{{{A}}}|p".encode(), f"{A}x|p".encode()):
        assert key_tenant(key) is None, key
    assert key_tenant(f"{A[:8]}|{A[9:]}|p".encode()) is None  # a '|' inside the first 36 bytes
    assert key_tenant(f"{A}|".encode()) == A
    assert key_tenant(f"{A}|polygon|AAPL".encode()) is key_tenant(f"{A}|other".encode())  # parsed once


def test_any_claim_of_another_tenant_is_a_mismatch() -> None:
    ok = check(A, topic_tenant=A, key=f"{A}|v|S".encode(), headers=[("mds.tenant_id", A.encode())])
    assert ok is None
    assert check(A, topic_tenant=None, key=b"free", headers=None) is None
    topic = check(A, topic_tenant=B, key=None, headers=None)
    assert topic is not None and (topic.code, topic.field) == ("tenant_mismatch", "tenant_id")
    assert topic.message == f"the record is of tenant {A} but its topic names tenant {B}"
    key = check(A, topic_tenant=None, key=f"{B}|v|S".encode(), headers=None)
    assert key is not None and key.message.endswith(f"its key names tenant {B}")
    header = check(A, topic_tenant=None, key=None, headers={"tenant_id": "not-an-id"})
    assert header is not None and header.message.endswith("its header names tenant not-an-id")
    nameless = check(A, topic_tenant="", key=None, headers=None)
    assert nameless is not None and nameless.message.endswith("its topic names tenant (none)")
