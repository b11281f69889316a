"""Avro in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro body.

Schemas are used without their logical types: the binary encoding is the same, and leaving
timestamps as int microseconds, dates as int days and uuids as text halves the decode cost.
Conversion happens in SQL at upsert time (see tables.py).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from mds_sink.avro.fast import FlatReader, compile_reader
from mds_sink.core.rejection import decode_error
from mds_sink.errors import SchemaNotFound

MAGIC = 0
HEADER = struct.Struct(">bI")

AvroSchema = dict[str, Any]


class SchemaSource(Protocol):
    def writer_schema(self, schema_id: int) -> AvroSchema:
        """The writer schema for an id, as parsed JSON; raises SchemaNotFound."""
        ...

    def close(self) -> None: ...


def strip_logical_types(schema: Any) -> Any:
    """The same schema without logicalType annotations (same binary encoding, raw values)."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


def local_schema_id(schema: AvroSchema) -> int:
    """Id of a schema in registry-less mode: the top 31 bits of its CRC-64-AVRO fingerprint.

    Producers without a registry frame records with this id (`mds-sink schemas ids` lists them).
    """
    digest = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    return int(digest[:8], 16) & 0x7FFF_FFFF


def load_schema_file(path: Path) -> AvroSchema:
    loaded: AvroSchema = json.loads(path.read_text())
    return loaded


@dataclass
class LocalSchemas:
    """Registry-less mode: writer schemas are the .avsc files of schemas/ (current and previous/)."""

    by_id: dict[int, AvroSchema] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, directory: Path) -> LocalSchemas:
        source = cls()
        for path in sorted([*directory.glob("*.avsc"), *directory.glob("previous/*.avsc")]):
            schema = load_schema_file(path)
            source.by_id[local_schema_id(schema)] = schema
        return source

    def writer_schema(self, schema_id: int) -> AvroSchema:
        try:
            return self.by_id[schema_id]
        except KeyError:
            raise SchemaNotFound(f"schema id {schema_id} is not one of schemas/ (registry-less mode)") from None

    def close(self) -> None:
        """Nothing to release: the schemas are files."""


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def encode(parsed_schema: Any, schema_id: int, record: Mapping[str, Any]) -> bytes:
    out = BytesIO()
    out.write(HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(out, parsed_schema, record)
    return out.getvalue()


@dataclass
class Decoder:
    """Decodes framed values of one reader schema (one table), caching the resolved writer schemas."""

    reader: AvroSchema
    source: SchemaSource
    _parsed_reader: Any = None
    # schema id -> (parsed writer schema, reader schema if resolution is needed, generated fast reader)
    _writers: dict[int, tuple[Any, Any, FlatReader | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._parsed_reader = fastavro.parse_schema(strip_logical_types(self.reader))
        self._reader_name = self._parsed_reader["name"]

    def _resolve(self, schema_id: int) -> tuple[Any, Any, FlatReader | None]:
        try:
            writer = self.source.writer_schema(schema_id)
        except SchemaNotFound as exc:
            raise decode_error("unknown_schema", str(exc)) from None
        parsed: Any = fastavro.parse_schema(strip_logical_types(writer))
        if parsed.get("name") != self._reader_name:
            raise decode_error(
                "schema_mismatch",
                f"schema id {schema_id} is {parsed.get('name')!r}, this topic carries {self._reader_name!r}",
            )
        # Same schema: no resolution needed, which is the fast path of fastavro, and ours.
        same = to_parsing_canonical_form(parsed) == to_parsing_canonical_form(self._parsed_reader)
        resolved = (parsed, None, compile_reader(parsed)) if same else (parsed, self._parsed_reader, None)
        self._writers[schema_id] = resolved
        return resolved

    def decode(self, value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise decode_error("null_value", "the record has no value (a tombstone)")
        if not value:
            raise decode_error("empty_value", "the record's value is empty (0 bytes)")
        if len(value) < HEADER.size:
            raise decode_error("truncated", f"value of {len(value)} bytes is shorter than the 5-byte header")
        magic, schema_id = HEADER.unpack_from(value)
        if magic != MAGIC:
            raise decode_error("bad_magic", f"magic byte is {magic & 0xFF}, expected 0 (Confluent wire format)")
        writer, reader, fast = self._writers.get(schema_id) or self._resolve(schema_id)
        if fast is not None:
            try:
                return fast(value, HEADER.size)
            except Exception:
                pass  # not the plain encoding: fastavro below decides what it is, and why
        body = BytesIO(value)
        body.seek(HEADER.size)
        try:
            record: Any = fastavro.schemaless_reader(body, writer, reader)
        except EOFError:
            raise decode_error("truncated", f"Avro body ends early for schema id {schema_id}") from None
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise decode_error("corrupt_avro", f"cannot read Avro body: {type(exc).__name__}: {exc}") from None
        if body.tell() != len(value):
            raise decode_error(
                "corrupt_avro", f"{len(value) - body.tell()} bytes left after the record (wrong schema or corrupt)"
            )
        if not isinstance(record, dict):
            raise decode_error("schema_mismatch", f"schema id {schema_id} is not a record schema")
        return record
