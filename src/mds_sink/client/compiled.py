"""Straight-line Python generated once per record type: typed record to Avro record, and Avro record to bytes.

fastavro's schemaless writer costs ~4.5 us for a bar and the generic conversion (`RecordEncoder.record`
over `fields()`) ~4.5 us more: most of what publishing a record costs in this process. Every schema
here is a flat record of primitives and [null, primitive] unions, which a generated function writes
by concatenating bytes, reusing the encoding of the strings and longs that repeat (tenants, vendors,
symbols, timestamps shared by a minute's bars): ~1.5 us.

As avro/fast.py is for reading, this is only ever a shortcut: it accepts strictly less than fastavro
(exact `str` and `int` values, ints within the Avro range, a union's value of its declared type), writes
byte for byte what fastavro writes when it accepts, and raises on anything else; the caller then takes
the general path (`RecordEncoder` and fastavro), so every refusal keeps its reason.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mds_sink.client.encoder import _days, _timestamp_us

AvroWriter = Callable[[dict[str, Any], bytes], bytes]  # (record, 5-byte header) -> framed value
RecordReader = Callable[[Any], dict[str, Any]]  # typed record -> the record as the Avro writer sees it

_LONG = (-(1 << 63), (1 << 63) - 1)
_INT = (-(1 << 31), (1 << 31) - 1)
_MAX_CACHED = 50_000  # distinct strings and longs remembered per writer; then it stops remembering
_MAX_CACHED_STRING = 64  # free text (titles, summaries) is not worth remembering
_DOUBLES = {n: struct.Struct("<" + "d" * n).pack for n in range(1, 33)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class NotFast(Exception):
    """A value the generated writer does not take: write the record the general way."""


def _varint(n: int) -> bytes:
    """Zig-zag varint of a long (the caller checked the range)."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Cache:
    """Encoded strings and longs of one writer, bounded: past `_MAX_CACHED` entries new ones are not kept."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.longs: dict[int, bytes] = {}

    def string(self, s: str) -> bytes:
        b = s.encode()
        seg = _varint(len(b)) + b
        if len(s) <= _MAX_CACHED_STRING and len(self.strings) < _MAX_CACHED:
            self.strings[s] = seg
        return seg

    def long(self, n: int) -> bytes:
        seg = _varint(n)
        if len(self.longs) < _MAX_CACHED:
            self.longs[n] = seg
        return seg


def _field_type(schema: Any) -> tuple[str, int | None] | None:
    """(primitive, index of null in a union or None) of a field type written here; None otherwise."""
    if isinstance(schema, dict) and set(schema) <= {"type", "logicalType"}:
        schema = schema.get("type")
    if isinstance(schema, str):
        return (schema, None) if schema in ("boolean", "int", "long", "double", "string") else None
    if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
        other = schema[1 - schema.index("null")]
        if isinstance(other, str) and other in ("boolean", "int", "long", "double", "string"):
            return other, schema.index("null")
    return None


def _value(kind: str, v: str, target: str) -> list[str]:
    """Source lines writing the value in local `v` (already of its type) into the bytes local `target`."""
    if kind == "string":
        return [f"{target} = _strings.get({v})", f"if {target} is None:", f"    {target} = _string({v})"]
    if kind in ("int", "long"):
        return [f"{target} = _longs.get({v})", f"if {target} is None:", f"    {target} = _long({v})"]
    if kind == "double":
        return [f"{target} = _DOUBLES[1]({v})"]
    return [f"{target} = b'\\x01' if {v} else b'\\x00'"]  # boolean


def _check(kind: str, v: str) -> str:
    """A condition true when `v` is not a value of `kind` the generated writer takes."""
    if kind == "string":
        return f"{v}.__class__ is not str"
    if kind == "int":
        return f"{v}.__class__ is not int or not {_INT[0]} <= {v} <= {_INT[1]}"
    if kind == "long":
        return f"{v}.__class__ is not int or not {_LONG[0]} <= {v} <= {_LONG[1]}"
    if kind == "double":
        return f"{v}.__class__ is not float"
    return f"{v}.__class__ is not bool"


def compile_writer(schema: Any) -> AvroWriter | None:
    """A generated writer for a record schema of primitives and [null, primitive] unions; else None."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    fields = [(f["name"], _field_type(f["type"])) for f in schema["fields"]]
    if any(t is None for _, t in fields):
        return None
    lines = ["def write(r, header):"]
    parts = ["header"]
    i = 0
    while i < len(fields):
        name, (kind, null_at) = fields[i]  # type: ignore[misc]  # None ruled out above
        target = f"s{i}"
        parts.append(target)
        if kind == "double" and null_at is None:
            # A run of plain doubles (open, high, low, close, volume) is one struct call; struct converts
            # what is not a float exactly as fastavro does (PyFloat_AsDouble), so no check is needed.
            j = i
            while j < len(fields) and fields[j][1] == ("double", None):
                j += 1
            args = ", ".join(f"r[{fields[k][0]!r}]" for k in range(i, j))
            lines.append(f"    {target} = _DOUBLES[{j - i}]({args})")
            i = j
            continue
        lines.append(f"    v = r[{name!r}]")
        if null_at is None:
            lines += [f"    if {_check(kind, 'v')}:", "        raise NotFast"]
            lines += ["    " + line for line in _value(kind, "v", target)]
        else:
            # The branch index is a zig-zag varint: 0 is the byte 0x00, 1 the byte 0x02.
            null_byte, value_byte = (b"\x00", b"\x02") if null_at == 0 else (b"\x02", b"\x00")
            lines += [
                "    if v is None:",
                f"        {target} = {null_byte!r}",
                f"    elif {_check(kind, 'v')}:",
                "        raise NotFast",
                "    else:",
                *["        " + line for line in _value(kind, "v", "w")],
                f"        {target} = {value_byte!r} + w",
            ]
        i += 1
    lines.append(f"    return b''.join(({', '.join(parts)},))")
    cache = _Cache()
    scope: dict[str, Any] = {
        "NotFast": NotFast,
        "_DOUBLES": _DOUBLES,
        "_strings": cache.strings,
        "_string": cache.string,
        "_longs": cache.longs,
        "_long": cache.long,
    }
    # Our own source text, built above from field types and names (names only as repr() literals).
    exec(compile("\n".join(lines), f"<avro writer {schema.get('name')}>", "exec"), scope)
    writer: AvroWriter = scope["write"]
    return writer


def compile_record_reader(record_type: type, schema: Any, *, json_payload: bool) -> RecordReader | None:
    """A generated `record.fields()` followed by `RecordEncoder.record`, for a typed record whose fields
    are exactly the schema's; None when they are not. Raises on any value it does not convert itself."""
    names = [f.name for f in dataclasses.fields(record_type)]
    by_name = {f["name"]: f for f in schema["fields"]}
    if set(names) != set(by_name):
        return None
    lines = ["def read(rec):"]
    for i, name in enumerate(names):
        lines.append(f"    v{i} = rec.{name}")
        avro_type = by_name[name]["type"]
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        if logical == "timestamp-micros":
            lines += [
                f"    if v{i}.__class__ is datetime:",
                f"        v{i} = (v{i} - (_EPOCH if v{i}.tzinfo is not None else _NAIVE_EPOCH)) // _ONE_US",
                f"    elif v{i} is not None:",
                f"        v{i} = _us(v{i}, {name!r})",
            ]
        elif logical == "date":
            lines += [
                f"    if v{i}.__class__ is date:",
                f"        v{i} = v{i}.toordinal() - _EPOCH_ORDINAL",
                f"    elif v{i} is not None:",
                f"        v{i} = _days(v{i}, {name!r})",
            ]
        if name == "tenant_id":
            lines += [f"    if v{i}.__class__ is not str and isinstance(v{i}, UUID):", f"        v{i} = str(v{i})"]
        if name == "payload" and json_payload:
            lines += [f"    if isinstance(v{i}, dict):", f"        v{i} = _dumps(v{i})"]
    lines.append("    return {" + ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names)) + "}")
    scope: dict[str, Any] = {
        "datetime": datetime,
        "date": date,
        "UUID": uuid.UUID,
        "_EPOCH": _EPOCH,
        "_NAIVE_EPOCH": _NAIVE_EPOCH,
        "_ONE_US": _ONE_US,
        "_EPOCH_ORDINAL": _EPOCH_ORDINAL,
        "_us": _timestamp_us,
        "_days": _days,
        "_dumps": json.dumps,
    }
    # Our own source text, built from the dataclass's field names (identifiers) and the schema's types.
    exec(compile("\n".join(lines), f"<record reader {record_type.__name__}>", "exec"), scope)
    reader: RecordReader = scope["read"]
    return reader
