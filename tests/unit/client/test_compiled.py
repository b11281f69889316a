"""The generated writers and record readers give exactly what the general path (fastavro, RecordEncoder)
gives, or raise; and a publisher refusing a record says exactly what the general path says."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from io import BytesIO
from typing import Any

import fastavro
import pytest

from mds_sink.avro.codec import HEADER, load_schema_file, strip_logical_types
from mds_sink.client.compiled import NotFast, compile_record_reader, compile_writer
from mds_sink.client.encoder import encoder_for, table_for
from mds_sink.client.errors import PublishError
from mds_sink.client.publisher import PublisherCore
from mds_sink.client.records import RECORD_TYPES, Bar, Fields, JobRequest, News, OptionSnapshot, Quote, Record
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import load_settings

SCHEMAS = resource_dir("schemas")
TENANT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
TS = datetime(2026, 12, 1, 11, 59, 30, 123456, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HDR = HEADER.pack(0, 12345)


def schema(record: str) -> Any:
    return strip_logical_types(load_schema_file(SCHEMAS / f"{record}.avsc"))


def fastavro_bytes(record_schema: Any, record: dict[str, Any]) -> bytes:
    out = BytesIO()
    out.write(HDR)
    fastavro.schemaless_writer(out, fastavro.parse_schema(record_schema), record)
    return out.getvalue()


def bar(**changes: Any) -> dict[str, Any]:
    return {
        "tenant_id": TENANT,
        "vendor": "polygon",
        "symbol": "AAPL",
        "timeframe": "1m",
        "ts": 1_796_000_000_000_000,
        "open": 10.0,
        "high": 11.0,
        "low": 9.5,
        "close": 10.5,
        "volume": 100.0,
        "vwap": None,
        "trade_count": None,
        "revision": 0,
        **changes,
    }


@pytest.mark.parametrize(
    "record",
    [
        bar(),
        bar(vwap=10.25, trade_count=7, revision=3),
        bar(ts=0, trade_count=0, revision=-1),
        bar(ts=-1, trade_count=-(1 << 63), revision=(1 << 31) - 1),
        bar(ts=(1 << 63) - 1, trade_count=63, revision=64),
        bar(symbol="ÄÖÜ-€", vendor="", volume=0.0, open=-0.0, high=math.inf, low=math.nan),
        bar(open=1, high=True, low=5e-324, close=1.7976931348623157e308),  # doubles: what fastavro takes
        bar(symbol="S" * 200),
    ],
)
def test_a_bar_is_written_byte_for_byte_as_fastavro_writes_it(record: dict[str, Any]) -> None:
    writer = compile_writer(schema("bar"))
    assert writer is not None
    assert writer(record, HDR) == fastavro_bytes(schema("bar"), record)
    assert writer(record, HDR) == fastavro_bytes(schema("bar"), record)  # again, from its caches


def test_every_type_is_written_as_fastavro_writes_it() -> None:
    records: dict[str, dict[str, Any]] = {
        "quote": {
            "tenant_id": TENANT,
            "vendor": "v",
            "symbol": "X",
            "ts": 5,
            "bid": 1.0,
            "ask": 2.0,
            "bid_size": 3.0,
            "ask_size": 4.0,
            "exchange": "XNAS",
            "revision": 0,
        },
        "fundamentals": {
            "tenant_id": TENANT,
            "vendor": "v",
            "symbol": "X",
            "as_of": 20_000,
            "period": "FY",
            "currency": "USD",
            "total_assets": 1.5,
            "total_liabilities": None,
            "revenue": None,
            "net_income": -2.0,
            "eps": None,
            "shares_outstanding": 1e9,
            "revision": 2,
        },
        "news": {
            "tenant_id": TENANT,
            "vendor": "v",
            "id": None,
            "published_at": 7,
            "title": "Ein Titel mit Umlauten: äöü",
            "symbol": "X",
            "url": None,
            "summary": "s" * 500,
            "sentiment_score": -0.5,
        },
        "option_snapshot": {
            "tenant_id": TENANT,
            "vendor": "v",
            "underlying": "SPY",
            "expiry": 20_500,
            "option_type": "C",
            "strike": 500.0,
            "ts": 9,
            "iv": 0.2,
            "delta": None,
            "gamma": 0.01,
            "theta": None,
            "vega": None,
            "open_interest": 1000,
            "volume": None,
            "spot": 499.5,
            "bid": None,
            "ask": 1.25,
        },
        "job_request": {
            "tenant_id": TENANT,
            "idempotency_key": "k",
            "job_type": "refresh",
            "payload": "{}",
            "priority": -100,
            "requested_at": 11,
            "requested_by": "ops",
        },
    }
    for name, record in records.items():
        writer = compile_writer(schema(name))
        assert writer is not None, name
        assert writer(record, HDR) == fastavro_bytes(schema(name), record), name


@pytest.mark.parametrize(
    "record",
    [
        bar(ts=1.5),  # a long given a float
        bar(ts=True),  # a bool is not taken as a long here (fastavro decides)
        bar(ts=1 << 63),  # beyond the long range
        bar(revision=1 << 31),  # beyond the int range
        bar(vwap=10),  # an int in a [null, double] union: fastavro picks the branch
        bar(symbol=b"AAPL"),
        bar(trade_count="7"),
    ],
)
def test_a_value_it_does_not_take_raises_instead_of_guessing(record: dict[str, Any]) -> None:
    writer = compile_writer(schema("bar"))
    assert writer is not None
    with pytest.raises(NotFast):
        writer(record, HDR)


def test_a_missing_field_raises() -> None:
    writer = compile_writer(schema("bar"))
    assert writer is not None
    record = bar()
    del record["revision"]
    with pytest.raises(KeyError):
        writer(record, HDR)


def test_schemas_it_cannot_write_get_no_writer() -> None:
    assert compile_writer({"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array"}}]}) is None
    assert compile_writer({"type": "enum", "name": "E", "symbols": ["A"]}) is None


def typed_records() -> Iterator[Record]:
    east = timezone(timedelta(hours=-5))
    yield Bar(
        tenant_id=uuid.UUID(TENANT),
        vendor="v",
        symbol="X",
        timeframe="1m",
        ts=TS,
        open=1.0,
        high=2.0,
        low=0.5,
        close=1.5,
        volume=3.0,
    )
    yield Bar(
        tenant_id=TENANT,
        vendor="v",
        symbol="X",
        timeframe="1m",
        ts=TS.astimezone(east),
        open=1,
        high=2,
        low=0,
        close=1,
        volume=3,
    )
    yield Bar(
        tenant_id=TENANT,
        vendor="v",
        symbol="X",
        timeframe="1m",
        ts=TS.replace(tzinfo=None),
        open=1.0,
        high=2.0,
        low=0.5,
        close=1.5,
        volume=3.0,
    )
    yield Bar(tenant_id=TENANT, vendor="v", symbol="X", timeframe="1m", ts=5, open=1, high=1, low=1, close=1, volume=0)
    yield Bar(
        tenant_id=TENANT, vendor="v", symbol="X", timeframe="1m", ts="2026-12-01T11:00:00Z", open=1, high=1, low=1,  # type: ignore[arg-type]
        close=1, volume=0,
    )  # fmt: skip
    yield Quote(tenant_id=TENANT, vendor="v", symbol="X", ts=TS, bid=1.0, ask=2.0, bid_size=1.0, ask_size=1.0)
    yield News(tenant_id=TENANT, vendor="v", published_at=datetime(1969, 12, 31, 23, 59, 59), title="t")
    yield OptionSnapshot(
        tenant_id=TENANT, vendor="v", underlying="X", expiry=date(2027, 1, 15), option_type="C", strike=1.0, ts=TS
    )
    yield OptionSnapshot(
        tenant_id=TENANT,
        vendor="v",
        underlying="X",
        expiry="2027-01-15",  # type: ignore[arg-type]
        option_type="C",
        strike=1.0,
        ts=TS,
    )
    yield JobRequest(
        tenant_id=TENANT, idempotency_key="k", job_type="t", requested_at=TS, payload={"b": [1, 2], "a": "é"}
    )
    yield JobRequest(tenant_id=TENANT, idempotency_key="k", job_type="t", requested_at=TS, payload='{"as": "text"}')  # type: ignore[arg-type]


def test_the_generated_record_reader_equals_fields_then_the_encoders_conversion() -> None:
    for record in typed_records():
        spec = table_for(record.table)
        encoder = encoder_for(spec, SCHEMAS)
        read = compile_record_reader(type(record), encoder.schema, json_payload=spec.name == "jobs")
        assert read is not None
        expected = encoder.record(record.fields())
        assert read(record) == expected, record
        assert list(read(record)) == list(expected)  # same order, so the same names in errors


def test_every_typed_record_has_a_generated_reader_and_writer() -> None:
    for record_type in RECORD_TYPES:
        spec = table_for(record_type.table)
        encoder = encoder_for(spec, SCHEMAS)
        assert compile_record_reader(record_type, encoder.schema, json_payload=spec.name == "jobs") is not None
        assert compile_writer(strip_logical_types(encoder.schema)) is not None


@pytest.fixture
def core() -> Iterator[PublisherCore]:
    c = PublisherCore(load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"}), clock=NOW.timestamp)
    yield c
    c.close(0)


def outcome(core: PublisherCore, run: Any) -> tuple[str, Any]:
    try:
        return "ok", run()
    except PublishError as exc:
        return type(exc).__name__, str(exc)


def test_the_publisher_gives_what_the_general_path_gives_for_good_and_bad_records(core: PublisherCore) -> None:
    good = list(typed_records())
    base = good[0]
    assert isinstance(base, Bar)
    bad: list[Record] = [
        dataclasses.replace(base, high=0.1),
        dataclasses.replace(base, tenant_id="acme"),
        dataclasses.replace(base, symbol=" "),
        dataclasses.replace(base, ts=NOW + timedelta(hours=1)),
        dataclasses.replace(base, ts="not a time"),  # type: ignore[arg-type]
        dataclasses.replace(base, ts=1.5),  # type: ignore[arg-type]
        dataclasses.replace(base, vwap=10),
        dataclasses.replace(base, trade_count=-1),
        dataclasses.replace(base, volume=math.nan),
        dataclasses.replace(base, revision=1 << 40),
        dataclasses.replace(base, symbol=["X"]),  # type: ignore[arg-type]
    ]
    fields: list[Fields] = [
        Fields("bars", {**base.fields(), "ts": "2026-12-01T11:00:00Z", "tenant_id": TENANT}),
        Fields("bars", {"tenant_id": TENANT}),
        Fields("bars", {**base.fields(), "tenant_id": TENANT, "extra": 1}),
        Fields("quotes", {"tenant_id": TENANT, "vendor": "v", "symbol": "X", "ts": 1, "bid": 2.0, "ask": 1.0}),
    ]
    for record in [*good, *bad, *fields]:
        fast = outcome(core, lambda r=record: core.message(r)[1])
        general = outcome(core, lambda r=record: core._general(r))
        if general[0] == "ok":
            assert fast == ("ok", {"key": general[1].key, "value": general[1].value}), record
            assert core.prepare(record).label == general[1].label
        else:
            assert fast == general, record
