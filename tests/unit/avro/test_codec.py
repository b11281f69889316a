from __future__ import annotations

import json
from typing import Any

import fastavro
import pytest

from mds_sink.avro.codec import Decoder, LocalSchemas, encode, frame, local_schema_id, strip_logical_types
from mds_sink.config.resources import resource_dir
from mds_sink.core.rejection import RecordRejected

SCHEMAS = resource_dir("schemas")
TENANT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
BAR = {
    "tenant_id": TENANT,
    "vendor": "polygon",
    "symbol": "AAPL",
    "timeframe": "1m",
    "ts": 1_700_000_000_000_000,
    "open": 1.0,
    "high": 2.0,
    "low": 0.5,
    "close": 1.5,
    "volume": 10.0,
    "vwap": None,
    "trade_count": 3,
    "revision": 0,
}


def schema(name: str, *, previous: bool = False) -> dict[str, Any]:
    path = SCHEMAS / ("previous" if previous else "") / f"{name}.avsc"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def decoder(name: str = "bar") -> Decoder:
    return Decoder(schema(name), LocalSchemas.from_dir(SCHEMAS))


def framed(record: dict[str, Any], name: str = "bar", *, previous: bool = False) -> bytes:
    s = schema(name, previous=previous)
    return encode(fastavro.parse_schema(strip_logical_types(s)), local_schema_id(s), record)


def reason(value: bytes | None) -> str:
    with pytest.raises(RecordRejected) as err:
        decoder().decode(value)
    return err.value.rejection.code


def test_round_trip_keeps_raw_values() -> None:
    assert decoder().decode(framed(BAR)) == BAR


def test_undecodable_values_have_reasons() -> None:
    good = framed(BAR)
    assert reason(None) == "null_value"  # a tombstone
    assert reason(b"") == "empty_value"
    assert reason(b"\x00\x01") == "truncated"
    assert reason(b"\x01" + good[1:]) == "bad_magic"
    assert reason(frame(424242, good[5:])) == "unknown_schema"
    assert reason(good[:-3]) == "truncated"
    assert reason(good + b"\x00\x00") == "corrupt_avro"


def test_record_of_another_type_is_a_schema_mismatch() -> None:
    quote = {
        "tenant_id": TENANT,
        "vendor": "v",
        "symbol": "S",
        "ts": 1,
        "bid": 1.0,
        "ask": 1.0,
        "bid_size": 1.0,
        "ask_size": 1.0,
        "exchange": None,
        "revision": 0,
    }
    assert reason(framed(quote, "quote")) == "schema_mismatch"


def sample(s: dict[str, Any]) -> dict[str, Any]:
    """A record with a value of the right type for every field of a schema."""
    values = {"string": "X", "long": 7, "int": 3, "double": 1.5, "boolean": True}
    record: dict[str, Any] = {}
    for f in s["fields"]:
        t = f["type"]
        if isinstance(t, list):  # ["null", T]: fill it, so the value must survive resolution
            t = t[1]
        if isinstance(t, dict):
            record[f["name"]] = TENANT if t.get("logicalType") == "uuid" else values[t["type"]]
        else:
            record[f["name"]] = values[t]
    return record


@pytest.mark.parametrize("name", sorted(p.stem for p in (SCHEMAS / "previous").glob("*.avsc")))
def test_previous_schema_version_reads_through_current_schemas(name: str) -> None:
    old, new = schema(name, previous=True), schema(name)
    record = sample(old)
    decoded = Decoder(new, LocalSchemas.from_dir(SCHEMAS)).decode(framed(record, name, previous=True))
    added = {f["name"]: f for f in new["fields"] if f["name"] not in record}
    assert added, f"{name}: 1.1 adds no field over 1.0"
    assert decoded == {**record, **{n: f["default"] for n, f in added.items()}}


def test_every_field_is_documented_and_namespaced() -> None:
    for path in sorted(SCHEMAS.glob("*.avsc")):
        s = json.loads(path.read_text())
        assert s["namespace"] == "mds.marketdata.v1"
        assert all(f.get("doc") for f in s["fields"]), path.name
