"""The generated readers are a shortcut only: whatever they accept, fastavro reads the same way."""

from __future__ import annotations

import io
import json
import random
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest

from mds_sink.avro.codec import strip_logical_types
from mds_sink.avro.fast import NotFast, compile_reader
from mds_sink.config.resources import resource_dir

SCHEMAS = resource_dir("schemas")
PATHS = sorted([*SCHEMAS.glob("*.avsc"), *SCHEMAS.glob("previous/*.avsc")])


def parsed(path: Path) -> Any:
    return fastavro.parse_schema(strip_logical_types(json.loads(path.read_text())))


def random_value(kind: str, rng: random.Random) -> Any:
    if kind == "string":
        alphabet = "abcXYZ019 -_.é€😀\u0000"
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 36, 200])))
    if kind == "bytes":
        return rng.randbytes(rng.choice([0, 3, 70]))
    if kind == "long":
        return rng.choice([0, -1, 1, 63, -64, 64, 2**31, -(2**40), 1_763_650_800_000_000, 2**63 - 1, -(2**63)])
    if kind == "int":
        return rng.choice([0, -1, 1, 100, -100, 2**31 - 1, -(2**31)])
    if kind in ("double", "float"):
        value = rng.choice([0.0, -0.0, 1.5, -2.25, 1e300, float("inf"), 123.456])
        return struct.unpack("<f", struct.pack("<f", value))[0] if kind == "float" and abs(value) < 1e38 else value
    if kind == "boolean":
        return rng.random() < 0.5
    raise AssertionError(kind)


def random_record(schema: Any, rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for f in schema["fields"]:
        t = f["type"]
        t = t["type"] if isinstance(t, dict) else t
        if isinstance(t, list):
            other = next(x for x in t if x != "null")
            record[f["name"]] = None if rng.random() < 0.3 else random_value(other, rng)
        else:
            record[f["name"]] = random_value(t, rng)
    return record


def encode(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return b"\x00\x00\x00\x00\x01" + out.getvalue()


def slow(schema: Any, value: bytes) -> dict[str, Any] | None:
    """fastavro's reading, as the Decoder uses it: None when it fails or leaves bytes over."""
    body = io.BytesIO(value)
    body.seek(5)
    try:
        record = fastavro.schemaless_reader(body, schema, None)
    except Exception:
        return None
    return record if body.tell() == len(value) and isinstance(record, dict) else None


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a NaN is the same value read twice)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_every_market_data_schema_has_a_fast_reader_that_agrees_with_fastavro(path: Path) -> None:
    schema = parsed(path)
    reader = compile_reader(schema)
    assert reader is not None
    rng = random.Random(path.name)
    for _ in range(300):
        value = encode(schema, random_record(schema, rng))
        assert same(reader(value, 5), slow(schema, value))


@pytest.mark.parametrize("path", PATHS[:6], ids=lambda p: p.name)
def test_whatever_the_fast_reader_accepts_fastavro_reads_the_same(path: Path) -> None:
    schema = parsed(path)
    reader = compile_reader(schema)
    assert reader is not None
    rng = random.Random(7)
    accepted = refused = 0
    for _ in range(3000):
        value = bytearray(encode(schema, random_record(schema, rng)))
        mutation = rng.randrange(4)
        if mutation == 0:
            del value[rng.randrange(5, len(value) + 1) :]
        elif mutation == 1:
            value[rng.randrange(5, len(value))] = rng.randrange(256)
        elif mutation == 2:
            value += rng.randbytes(rng.randrange(1, 4))
        else:
            value[5:] = rng.randbytes(len(value) - 5)
        try:
            record = reader(bytes(value), 5)
        except Exception:
            refused += 1
            continue
        accepted += 1
        assert same(record, slow(schema, bytes(value))), bytes(value)
    assert accepted and refused


def test_plain_encoding_only() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "x", "type": ["null", "long"]}, {"name": "b", "type": "boolean"}],
        }
    )
    reader = compile_reader(schema)
    assert reader is not None
    assert reader(b"\x00\x00\x00\x00\x01\x02\x81\x01\x01", 5) == {"x": -65, "b": True}
    with pytest.raises(NotFast):
        reader(b"\x00\x00\x00\x00\x01\x01\x00", 5)  # union branch -1: fastavro takes Python's last element
    with pytest.raises(NotFast):
        reader(b"\x00\x00\x00\x00\x01\x00\x01\x00", 5)  # a byte left over
    with pytest.raises(NotFast):
        reader(b"\x00\x00\x00\x00\x01\x02" + b"\xff" * 10 + b"\x01\x00", 5)  # a varint past 64 bits


def test_schemas_it_does_not_read_fall_back() -> None:
    nested = {
        "type": "record",
        "name": "Outer",
        "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}],
    }
    assert compile_reader(fastavro.parse_schema(nested)) is None
    three = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null", "long", "string"]}]}
    assert compile_reader(fastavro.parse_schema(three)) is None
    assert compile_reader(fastavro.parse_schema("string")) is None


def test_repeated_timestamps_are_read_once_and_every_record_still_agrees_with_fastavro() -> None:
    # Bars of one minute share their ts: the reader keeps the 8-byte varints it read (a µs timestamp)
    # and reads them again from memory. Whatever it keeps, each record must read as fastavro reads it.
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "ts", "type": "long"}, {"name": "n", "type": "long"}, {"name": "s", "type": "string"}],
    }
    parsed_schema = fastavro.parse_schema(schema)
    reader = compile_reader(parsed_schema)
    assert reader is not None
    rng = random.Random(7)
    minute = 60_000_000
    values = [1_763_650_800_000_000 + minute * rng.randrange(3) for _ in range(300)]
    values += [-1_763_650_800_000_000, 2**55, 2**55 - 1, 2**48, 2**48 - 1, 2**62, 64, -65, 0]
    values += [rng.randrange(-(2**63), 2**63) for _ in range(300)]
    rng.shuffle(values)
    for _ in range(2):  # the second time, every value is a repeat
        for ts in values:
            record = {"ts": ts, "n": ts ^ 0x5555, "s": "x" * (ts % 7)}
            value = encode(parsed_schema, record)
            assert reader(value, 5) == record == slow(parsed_schema, value)
    # The same bytes in another field's place are not taken for a timestamp read before.
    value = encode(parsed_schema, {"ts": 1, "n": values[0], "s": ""})
    assert reader(value, 5) == {"ts": 1, "n": values[0], "s": ""}


def test_a_long_field_whose_values_do_not_repeat_is_read_plainly_for_a_while() -> None:
    # ts: 8-byte varints all different; n: 2-byte varints (never kept, as a count of trades).
    schema = {"type": "record", "name": "Q", "fields": [{"name": "ts", "type": "long"}, {"name": "n", "type": "long"}]}
    parsed_schema = fastavro.parse_schema(schema)
    reader = compile_reader(parsed_schema)
    assert reader is not None
    memos = [reader.__globals__["m0"], reader.__globals__["m1"]]
    size, retry = memos[0].SIZE, memos[0].RETRY_AFTER
    first = 1_763_650_800_000_017
    for i in range(size):  # all different: none found
        record = {"ts": first + i, "n": 1000 + i % 7}
        assert reader(encode(parsed_schema, record), 5) == record
    assert [(m.off, len(m)) for m in memos] == [(retry, 0), (retry, 0)]
    for ts in [first, first + 1, first] * 10:  # read plainly now, and still right
        record = {"ts": ts, "n": 1000}
        assert reader(encode(parsed_schema, record), 5) == record
    assert [(m.off, len(m)) for m in memos] == [(retry - 30, 0), (retry - 30, 0)]
