"""Records to framed Avro values in the sink's wire format, and their partition keys.

Timestamps are ISO 8601 strings (UTC if no offset is given), `datetime`s (naive means UTC) or integer
microseconds; dates are `YYYY-MM-DD`, `date`s or integer days. Records are keyed as the catalog says
(tenant|vendor|symbol for most) so that one series stays ordered within a partition.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fastavro

from mds_sink.avro.codec import AvroSchema, encode, load_schema_file, local_schema_id, strip_logical_types
from mds_sink.core.catalog import CATALOG, TABLES
from mds_sink.core.tables import TableSpec


def table_for(kind: str) -> TableSpec:
    """Accepts a table name (bars) or a record name (bar, option_snapshot)."""
    for spec in TABLES.values():
        if kind in (spec.name, spec.record):
            return spec
    names = ", ".join(sorted({s.record for s in TABLES.values()}))
    raise ValueError(f"unknown type {kind!r}: expected one of {names}")


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamp_us(value: Any, name: str) -> int:
    if isinstance(value, datetime):
        return _us(value)
    if isinstance(value, bool):
        raise ValueError(f"field {name!r}: expected an ISO 8601 timestamp or integer microseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"field {name!r}: {value!r} is not an ISO 8601 timestamp") from None
        return _us(parsed)
    raise ValueError(f"field {name!r}: expected an ISO 8601 timestamp or integer microseconds")


def _days(value: Any, name: str) -> int:
    if isinstance(value, date) and not isinstance(value, datetime):
        return (value - date(1970, 1, 1)).days
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return (date.fromisoformat(value) - date(1970, 1, 1)).days
        except ValueError:
            raise ValueError(f"field {name!r}: {value!r} is not a YYYY-MM-DD date") from None
    raise ValueError(f"field {name!r}: expected a YYYY-MM-DD date")


@dataclass
class RecordEncoder:
    """Turns JSON objects into framed Avro values for one record type."""

    spec: TableSpec
    schema: AvroSchema
    schema_id: int
    _parsed: Any = None
    _converters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._parsed = fastavro.parse_schema(strip_logical_types(self.schema))
        for f in self.schema["fields"]:
            logical = f["type"].get("logicalType") if isinstance(f["type"], dict) else None
            if logical == "timestamp-micros":
                self._converters[f["name"]] = _timestamp_us
            elif logical == "date":
                self._converters[f["name"]] = _days
        self._fields = {f["name"] for f in self.schema["fields"]}
        self._defaults = {f["name"]: f["default"] for f in self.schema["fields"] if "default" in f}

    def key(self, obj: dict[str, Any]) -> bytes:
        return "|".join(str(obj.get(k, "")) for k in CATALOG[self.spec.name].key_fields).encode()

    def encode(self, obj: Any) -> bytes:
        return self.frame(self.record(obj))

    def record(self, obj: Any) -> dict[str, Any]:
        """The record as the Avro writer (and the sink's decoder) sees it: timestamps in microseconds,
        dates in days, a job's payload as JSON text, tenant ids as text."""
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        unknown = sorted(set(obj) - self._fields)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} for {self.schema['name']}")
        record = {
            k: (self._converters[k](v, k) if k in self._converters and v is not None else v) for k, v in obj.items()
        }
        if self.spec.name == "jobs" and isinstance(record.get("payload"), dict):
            record["payload"] = json.dumps(record["payload"])
        if isinstance(record.get("tenant_id"), uuid.UUID):
            record["tenant_id"] = str(record["tenant_id"])
        return record

    def with_defaults(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` with the schema's defaults for the fields it leaves out, as the sink decodes it."""
        missing = {k: v for k, v in self._defaults.items() if k not in record}
        return {**missing, **record} if missing else record

    def frame(self, record: dict[str, Any]) -> bytes:
        try:
            return encode(self._parsed, self.schema_id, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"does not match {self.schema['name']}: {exc}") from None


def encoder_for(spec: TableSpec, schemas_dir: Path, schema_id: int | None = None) -> RecordEncoder:
    schema = load_schema_file(schemas_dir / f"{spec.record}.avsc")
    return RecordEncoder(spec, schema, local_schema_id(schema) if schema_id is None else schema_id)
