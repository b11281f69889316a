"""The publisher's pure half: records converted, validated by the sink's validators, keyed, routed, framed.

The producer is created but never reaches a broker: nothing is sent here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from mds_sink.client.errors import PermanentPublishError, RecordInvalid
from mds_sink.client.publisher import CollectorTenants, PublisherCore
from mds_sink.client.records import Bar, Fundamentals, JobRequest, News, OptionSnapshot, Quote, Record
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import load_settings
from mds_sink.core.rejection import RecordRejected

SCHEMAS = resource_dir("schemas")
TENANT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TS = datetime(2026, 12, 1, 11, 59, tzinfo=UTC)
TS_US = int(TS.timestamp()) * 1_000_000


@pytest.fixture
def core() -> Iterator[PublisherCore]:
    c = PublisherCore(load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"}), clock=NOW.timestamp)
    yield c
    c.close(0)


def decoded(record_name: str, value: bytes) -> dict[str, object]:
    return Decoder(load_schema_file(SCHEMAS / f"{record_name}.avsc"), LocalSchemas.from_dir(SCHEMAS)).decode(value)


def bar(**changes: object) -> Bar:
    fields: dict[str, object] = {
        "tenant_id": TENANT,
        "vendor": "polygon",
        "symbol": "AAPL",
        "timeframe": "1m",
        "ts": TS,
        "open": 10.0,
        "high": 11.0,
        "low": 9.5,
        "close": 10.5,
        "volume": 100.0,
        **changes,
    }
    return Bar(**fields)  # type: ignore[arg-type]


def test_a_bar_is_keyed_routed_and_framed_as_the_sink_reads_it(core: PublisherCore) -> None:
    out = core.prepare(bar(tenant_id=TENANT.upper()))
    assert out.topic == "mds.bars"
    assert out.key == f"{TENANT.upper()}|polygon|AAPL".encode()  # the sink's key: the fields as given
    assert decoded("bar", out.value) == {
        "tenant_id": TENANT.upper(),
        "vendor": "polygon",
        "symbol": "AAPL",
        "timeframe": "1m",
        "ts": TS_US,
        "open": 10.0,
        "high": 11.0,
        "low": 9.5,
        "close": 10.5,
        "volume": 100.0,
        "vwap": None,
        "trade_count": None,
        "revision": 0,
    }
    assert out.label == f"bar {TENANT.upper()}|polygon|AAPL ts={TS_US}"


@pytest.mark.parametrize(
    ("record", "field", "code"),
    [
        (bar(high=9.0), "high", "ohlc_inconsistent"),
        (bar(tenant_id="acme"), "tenant_id", "bad_tenant_id"),
        (bar(symbol="AA PL"), "symbol", "bad_symbol"),
        (bar(vendor="Polygon"), "vendor", "bad_vendor"),
        (bar(timeframe="2m"), "timeframe", "bad_timeframe"),
        (bar(ts=datetime(2026, 12, 1, 12, 10, tzinfo=UTC)), "ts", "ts_in_future"),
        (
            Quote(tenant_id=TENANT, vendor="v", symbol="X", ts=TS, bid=2.0, ask=1.0, bid_size=1, ask_size=1),
            "bid",
            "crossed_quote",
        ),
        (
            Fundamentals(tenant_id=TENANT, vendor="v", symbol="X", as_of=date(2026, 11, 30), period="H1"),
            "period",
            "bad_period",
        ),
        (News(tenant_id=TENANT, vendor="v", published_at=TS, title="  "), "title", "empty_title"),
        (
            OptionSnapshot(
                tenant_id=TENANT,
                vendor="v",
                underlying="X",
                expiry=date(2026, 11, 1),
                option_type="C",
                strike=1.0,
                ts=TS,
            ),
            "expiry",
            "expiry_before_snapshot",
        ),
        (
            JobRequest(tenant_id=TENANT, idempotency_key="k", job_type="refresh", requested_at=TS, priority=101),
            "priority",
            "bad_priority",
        ),
    ],
)
def test_a_record_the_sink_would_refuse_raises_before_sending_naming_its_field(
    core: PublisherCore, record: Record, field: str, code: str
) -> None:
    with pytest.raises(RecordInvalid) as raised:
        core.prepare(record)
    assert raised.value.field == field
    assert raised.value.rejection.code == code
    assert str(raised.value).startswith(f"{raised.value.record}: ")
    assert raised.value.record.split(" ")[1].split("|")[0] in (TENANT, "acme")  # named by its key
    assert f"(field {field})" in str(raised.value)


def test_the_error_is_one_line_naming_the_record_and_field(core: PublisherCore) -> None:
    with pytest.raises(RecordInvalid) as raised:
        core.prepare(bar(high=9.0))
    assert str(raised.value) == (
        f"bar {TENANT}|polygon|AAPL ts={TS_US}: validate/ohlc_inconsistent (field high): "
        "high 9.0 / low 9.5 do not bound open 10.0 and close 10.5"
    )


def test_a_value_the_schema_cannot_hold_is_permanent(core: PublisherCore) -> None:
    with pytest.raises(PermanentPublishError) as raised:
        core.prepare(bar(ts="yesterday"))
    assert (
        str(raised.value)
        == f"bar {TENANT}|polygon|AAPL ts=yesterday: field 'ts': 'yesterday' is not an ISO 8601 timestamp"
    )


def test_every_type_converts_dates_payloads_and_defaults(core: PublisherCore) -> None:
    job = core.prepare(
        JobRequest(tenant_id=TENANT, idempotency_key="k-1", job_type="refresh", requested_at=TS, payload={"a": 1})
    )
    assert job.topic == "mds.jobs"
    assert job.key == f"{TENANT}|k-1".encode()
    assert decoded("job_request", job.value) == {
        "tenant_id": TENANT,
        "idempotency_key": "k-1",
        "job_type": "refresh",
        "payload": json.dumps({"a": 1}),
        "priority": 0,
        "requested_at": TS_US,
        "requested_by": None,
    }
    fundamentals = core.prepare(Fundamentals(tenant_id=TENANT, vendor="v", symbol="X", as_of=date(1970, 1, 11)))
    assert decoded("fundamentals", fundamentals.value)["as_of"] == 10
    option = core.prepare(
        OptionSnapshot(
            tenant_id=TENANT,
            vendor="v",
            underlying="SPY",
            expiry=date(2026, 12, 18),
            option_type="P",
            strike=5.0,
            ts=TS,
        )
    )
    assert (option.topic, option.key) == ("mds.options", f"{TENANT}|v|SPY".encode())


def test_tenant_topics_route_by_the_canonical_tenant() -> None:
    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, topics={"tenant_topics": True})
    core = PublisherCore(settings, clock=NOW.timestamp)
    try:
        assert core.prepare(bar(tenant_id=TENANT.upper())).topic == f"mds.{TENANT}.bars"
    finally:
        core.close(0)


def test_collector_tenants_pass_any_uuid_and_refuse_the_rest() -> None:
    tenants = CollectorTenants()
    assert tenants.check(TENANT.upper()) == TENANT
    assert tenants.check(TENANT) == TENANT
    with pytest.raises(RecordRejected) as raised:
        tenants.check("acme")
    assert raised.value.rejection.code == "bad_tenant_id"
    disabled = CollectorTenants({TENANT: False})  # a set that does know a tenant is disabled still says so
    with pytest.raises(RecordRejected):
        disabled.check(TENANT)
