"""A fast path for the common record: straight-line Python generated once per flat writer schema.

fastavro's schemaless reader goes through a file object, one read() call per varint byte, and
costs ~4.5 us for a bar. Every market-data schema here is a flat record of primitives and
[null, primitive] unions, and such a record can be read by slicing the bytes in place: the
reader generated for it (`compile_reader`) takes ~1.5 us.

It is only ever a shortcut: it accepts strictly less than fastavro (no union branch other than
the two declared, no varint beyond 64 bits, no trailing bytes), returns exactly what fastavro
returns when it succeeds, and raises on anything else; the caller then decodes the same value
with fastavro, so every rejection keeps fastavro's reason.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

FlatReader = Callable[[bytes, int], dict[str, Any]]  # (framed value, offset of the Avro body) -> record

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})
_STRUCTS = {n: struct.Struct("<" + "d" * n).unpack_from for n in range(1, 33)}
_FLOAT = struct.Struct("<f").unpack_from


class _Memo(dict[bytes, int]):
    """The 8-byte varints (µs timestamps) of one long field, read once and then looked up by their bytes.

    The bars of a minute share their ts, so most are looked up, at about a third of the cost of reading
    them. A varint ends at its first byte below 0x80, so 8 bytes equal to a kept 8-byte varint are that
    varint. Emptied when full (a value is kept while it is recent). A field whose values do not repeat
    (quotes' µs) or are not 8 bytes long (counts) gains nothing and would pay a slice and a miss each
    time: when, by its 1,024th miss, fewer were found than missed, it reads plainly for a while.
    """

    __slots__ = ("hits", "misses", "off")
    SIZE = 1024
    RETRY_AFTER = 100_000  # varints read plainly before a field that did not repeat is tried again

    def __init__(self) -> None:
        super().__init__()
        self.hits = 0
        self.misses = 0  # varints not found, kept or not (only 8-byte ones are kept)
        self.off = 0

    def miss(self, key: bytes, buf: bytes, pos: int, first: int) -> tuple[int, int]:
        n, end = _varint(buf, pos, first)
        self.misses += 1
        if self.misses >= self.SIZE:
            if self.hits < self.misses:
                self.off = self.RETRY_AFTER
                self.clear()
            self.hits = self.misses = 0
            if self.off:
                return n, end
        if end - pos == 7:
            if len(self) >= self.SIZE:
                self.clear()
            self[key] = n
        return n, end


class NotFast(Exception):
    """The value is not the plain encoding the generated reader expects: decode it the slow way."""


def _varint(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a zig-zag varint whose first byte (>= 0x80) was read; (value, next position).

    Unrolled: a timestamp in microseconds is an 8-byte varint, and a loop costs a third more.
    """
    n = first & 0x7F
    for shift in (7, 14, 21, 28, 35, 42, 49, 56, 63):
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            if n >> 64:
                raise NotFast("varint beyond 64 bits")
            return (n >> 1) ^ -(n & 1), pos
    raise NotFast("varint longer than 10 bytes")


def _field_type(schema: Any) -> tuple[str, int | None] | None:
    """(primitive, union index of null or None) of a field type this module reads; None otherwise."""
    if isinstance(schema, dict) and set(schema) <= {"type"}:
        schema = schema.get("type")
    if isinstance(schema, str):
        return (schema, None) if schema in _PRIMITIVES else None
    if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
        other = schema[1 - schema.index("null")]
        if isinstance(other, str) and other in _PRIMITIVES and other != "null":
            return other, schema.index("null")
    return None


def _read(kind: str, target: str, memo: str | None = None) -> list[str]:
    """Source lines reading one value of a primitive type at `pos` into `target`; a long field's 8-byte
    varints are kept in the _Memo named `memo`."""
    varint = [
        "b = buf[pos]",
        "pos += 1",
        "if b < 0x80:",
        "    n = (b >> 1) ^ -(b & 1)",
        "else:",
        "    n, pos = _varint(buf, pos, b)",
    ]
    if memo is not None:
        varint[-1:] = [
            f"    if {memo}.off:",
            "        n, pos = _varint(buf, pos, b)",
            f"        {memo}.off -= 1",
            "    else:",
            "        key = buf[pos - 1:pos + 7]",
            f"        n = {memo}.get(key)",
            "        if n is None:",
            f"            n, pos = {memo}.miss(key, buf, pos, b)",
            "        else:",
            f"            {memo}.hits += 1",
            "            pos += 7",
        ]
    if kind == "null":
        return [f"{target} = None"]
    if kind == "boolean":
        return [f"{target} = buf[pos] != 0", "pos += 1"]
    if kind in ("int", "long"):
        return [*varint, f"{target} = n"]
    if kind == "float":
        return [f"{target} = _FLOAT(buf, pos)[0]", "pos += 4"]
    if kind == "double":
        return [f"{target} = _STRUCTS[1](buf, pos)[0]", "pos += 8"]
    # string or bytes: a length, then that many bytes
    value = "buf[pos:end].decode()" if kind == "string" else "buf[pos:end]"
    short = ["end = pos + n", "if n < 0 or end > size:", "    raise NotFast('short')"]
    return [*varint, *short, f"{target} = {value}", "pos = end"]


def compile_reader(parsed: Any) -> FlatReader | None:
    """A generated reader for a record schema of primitives and [null, primitive] unions; else None."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    fields = [(f["name"], _field_type(f["type"])) for f in parsed["fields"]]
    if any(t is None for _, t in fields):
        return None
    lines = ["def read(buf, pos):", "    size = len(buf)"]
    names = [f"v{i}" for i in range(len(fields))]
    scope: dict[str, Any] = {
        "_varint": _varint,
        "_STRUCTS": _STRUCTS,
        "_FLOAT": _FLOAT,
        "NotFast": NotFast,
    }
    i = 0
    while i < len(fields):
        kind, null_at = fields[i][1]  # type: ignore[misc]  # None ruled out above
        if kind == "double" and null_at is None:
            # A run of plain doubles (open, high, low, close, volume) is one struct call.
            j = i
            while j < len(fields) and fields[j][1] == ("double", None):
                j += 1
            run = names[i:j]
            lines += [f"    {', '.join(run)}, = _STRUCTS[{len(run)}](buf, pos)", f"    pos += {8 * len(run)}"]
            i = j
            continue
        memo = None
        if kind == "long":
            memo = f"m{i}"
            scope[memo] = _Memo()
        if null_at is None:
            lines += ["    " + line for line in _read(kind, names[i], memo)]
        else:
            # The branch index is a zig-zag varint too: 0 is the byte 0x00, 1 the byte 0x02.
            null_byte, value_byte = (0, 2) if null_at == 0 else (2, 0)
            lines += [
                "    b = buf[pos]",
                "    pos += 1",
                f"    if b == {null_byte}:",
                f"        {names[i]} = None",
                f"    elif b == {value_byte}:",
                *["        " + line for line in _read(kind, names[i], memo)],
                "    else:",
                "        raise NotFast('union branch')",
            ]
        i += 1
    lines += [
        "    if pos != size:",
        "        raise NotFast('trailing bytes')",
        "    return {" + ", ".join(f"{name!r}: {v}" for (name, _), v in zip(fields, names, strict=True)) + "}",
    ]
    # Our own source text, built above from field types and names (names only as repr() literals).
    exec(compile("\n".join(lines), f"<avro reader {parsed.get('name')}>", "exec"), scope)
    reader: FlatReader = scope["read"]
    return reader
